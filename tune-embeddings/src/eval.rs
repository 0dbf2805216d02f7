//! Held-out evaluation, as the reference did it: binary classification of true pairs against
//! pairs with rolled positives (accuracy at the best cosine threshold), and retrieval of each
//! anchor's positive among all held-out positives (MRR@10, Recall@1, Recall@10). For scored
//! pairs: Spearman and Pearson correlation of cosine with the score.

use std::collections::BTreeMap;

use encoder::cosine;

pub type Metrics = BTreeMap<String, f64>;

/// `anchors`, `positives`: row-major `[n × dim]` embeddings of the held-out pairs.
pub fn pair_metrics(anchors: &[f32], positives: &[f32], dim: usize) -> Metrics {
    let n = anchors.len() / dim;
    let row = |m: &'_ [f32], i: usize| -> Vec<f32> { m[i * dim..(i + 1) * dim].to_vec() };
    let (a, p): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
        (0..n).map(|i| (row(anchors, i), row(positives, i))).unzip();

    let mut scored: Vec<(f32, bool)> = Vec::with_capacity(2 * n);
    for i in 0..n {
        scored.push((cosine(&a[i], &p[i]), true));
        if n > 1 {
            scored.push((cosine(&a[i], &p[(i + 1) % n]), false));
        }
    }
    let accuracy = best_threshold_accuracy(&mut scored);

    let (mut mrr, mut r1, mut r10) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let own = cosine(&a[i], &p[i]);
        let rank = 1
            + (0..n)
                .filter(|&j| j != i && cosine(&a[i], &p[j]) > own)
                .count();
        if rank <= 10 {
            mrr += 1.0 / rank as f64;
            r10 += 1.0;
        }
        if rank == 1 {
            r1 += 1.0;
        }
    }
    let n = n as f64;
    Metrics::from([
        ("accuracy".into(), accuracy),
        ("mrr@10".into(), mrr / n),
        ("recall@1".into(), r1 / n),
        ("recall@10".into(), r10 / n),
    ])
}

/// Highest accuracy of "similar iff cosine ≥ t" over all thresholds t.
fn best_threshold_accuracy(scored: &mut [(f32, bool)]) -> f64 {
    scored.sort_by(|x, y| y.0.total_cmp(&x.0));
    let total = scored.len() as f64;
    let negatives = scored.iter().filter(|s| !s.1).count() as f64;
    // Threshold just below position k: the first k are called similar.
    let (mut best, mut tp, mut fp) = (negatives / total, 0.0, 0.0);
    for (k, s) in scored.iter().enumerate() {
        if s.1 {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = scored.get(k + 1).is_none_or(|next| next.0 < s.0);
        if last_of_tie {
            best = f64::max(best, (tp + (negatives - fp)) / total);
        }
    }
    best
}

pub fn scored_metrics(first: &[f32], second: &[f32], dim: usize, scores: &[f32]) -> Metrics {
    let cos: Vec<f64> = (0..scores.len())
        .map(|i| {
            cosine(
                &first[i * dim..(i + 1) * dim],
                &second[i * dim..(i + 1) * dim],
            ) as f64
        })
        .collect();
    let gold: Vec<f64> = scores.iter().map(|s| *s as f64).collect();
    Metrics::from([
        ("pearson".into(), pearson(&cos, &gold)),
        ("spearman".into(), pearson(&ranks(&cos), &ranks(&gold))),
    ])
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt().max(1e-12)
}

/// Ranks with ties averaged.
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        for k in i..=j {
            r[order[k]] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_useless_retrieval() {
        // Orthogonal one-hot embeddings: every anchor finds exactly its positive.
        let eye: Vec<f32> = (0..9).map(|i| if i % 4 == 0 { 1.0 } else { 0.0 }).collect();
        let m = pair_metrics(&eye, &eye, 3);
        assert_eq!((m["mrr@10"], m["recall@1"], m["accuracy"]), (1.0, 1.0, 1.0));
        // All positives identical: ties rank the own positive first (strictly-greater count).
        let same = vec![1.0f32; 9];
        let anchors: Vec<f32> = eye.clone();
        let m = pair_metrics(&anchors, &same, 3);
        assert_eq!(m["recall@1"], 1.0);
        assert!((m["accuracy"] - 0.5).abs() < 1e-9);
    }

    #[test]
    fn spearman_of_a_monotone_relation_is_one() {
        let first: Vec<f32> = vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        let second: Vec<f32> = vec![1.0, 0.0, 1.0, 1.0, 0.0, 1.0];
        let m = scored_metrics(&first, &second, 2, &[0.9, 0.5, 0.1]);
        assert!((m["spearman"] - 1.0).abs() < 1e-9, "{m:?}");
    }
}
