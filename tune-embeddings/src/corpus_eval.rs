//! Corpus evaluation: what the research measures, on the chunks of held-out documents (no
//! pair of them was trained on), embedded as apply-model would embed them.
//!
//! - Successive-passage retrieval: each chunk queries the next chunk of its document among
//!   all held-out chunks (itself excluded): `successive_mrr@10`, `successive_recall@1`,
//!   `successive_recall@10`. Ties count against the target (a candidate ranks above it only
//!   when strictly more similar).
//! - `successive_accuracy`: the reference's binary classification, on held-out successive
//!   pairs against the same queries paired with the next query's target (rolled), at the best
//!   cosine threshold.
//! - Time: for each chunk, its 10 nearest chunks (cosine; ties to the earlier chunk) among the
//!   held-out chunks of OTHER documents — the pool is the held-out set, so nothing trained on
//!   can be a neighbour. `knn_year_error`: mean over chunks of |median neighbour year − year|
//!   in years (lower is better); `knn_same_decade`: mean share of neighbours in the chunk's
//!   decade. The measures of the novelty paper's workflow (Historical-AI-Lab/novelty), where
//!   embeddings must place a passage in its time.
//!
//! Everything here is sequential in a fixed order, so the values do not depend on threads.

use std::collections::BTreeSet;

use common::corpus::Corpus;
use common::tables::ChunkRow;

use crate::eval::{best_threshold_accuracy, Metrics};
use crate::Error;

/// Neighbours per chunk for the time measures.
pub const K_NEIGHBOURS: usize = 10;

/// Metrics where a lower value is better (all others: higher).
pub const LOWER_IS_BETTER: [&str; 1] = ["knn_year_error"];

/// A held-out chunk: its document (any id, equal within a document) and year.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Passage {
    pub doc: usize,
    pub year: i32,
}

/// The chunks of the documents `docs` in `corpus`, in (document id, chunk_idx) order, and
/// their passages. Errors when none of `docs` is in the corpus.
pub fn held_out_chunks(
    corpus: &Corpus,
    docs: &BTreeSet<String>,
) -> Result<(Vec<String>, Vec<Passage>), Error> {
    let mut rows: Vec<ChunkRow> = Vec::new();
    corpus.for_each_batch(common::parquet_io::BATCH_ROWS, |batch| {
        rows.extend(batch.into_iter().filter(|r| docs.contains(&r.doc_id)));
        Ok::<(), Error>(())
    })?;
    if rows.is_empty() {
        return Err(Error::Invalid(
            "none of the held-out documents is in the corpus given for evaluation".into(),
        ));
    }
    rows.sort_by(|a, b| (&a.doc_id, a.chunk_idx).cmp(&(&b.doc_id, b.chunk_idx)));
    let mut passages = Vec::with_capacity(rows.len());
    let mut doc = 0;
    for (i, r) in rows.iter().enumerate() {
        if i > 0 && rows[i - 1].doc_id != r.doc_id {
            doc += 1;
        }
        passages.push(Passage { doc, year: r.year });
    }
    Ok((rows.into_iter().map(|r| r.text).collect(), passages))
}

/// The corpus measures (see the module docs) of `embeddings`, row-major `[n × dim]`, whose
/// row i is `passages[i]`; passages of one document are consecutive, in chunk order.
pub fn corpus_metrics(embeddings: &[f32], dim: usize, passages: &[Passage]) -> Metrics {
    corpus_metrics_k(embeddings, dim, passages, K_NEIGHBOURS)
}

/// [`corpus_metrics`] with `k` neighbours for the time measures (fewer when fewer chunks of
/// other documents exist).
pub fn corpus_metrics_k(embeddings: &[f32], dim: usize, passages: &[Passage], k: usize) -> Metrics {
    let n = passages.len();
    assert_eq!(embeddings.len(), n * dim, "one embedding per passage");
    let unit: Vec<f32> = embeddings
        .chunks(dim)
        .flat_map(|row| {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter().map(move |x| x / norm)
        })
        .collect();
    let sim = |i: usize, j: usize| -> f32 {
        let (a, b) = (&unit[i * dim..(i + 1) * dim], &unit[j * dim..(j + 1) * dim]);
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    };
    let mut m = Metrics::new();

    let queries: Vec<usize> = (0..n.saturating_sub(1))
        .filter(|&i| passages[i].doc == passages[i + 1].doc)
        .collect();
    if !queries.is_empty() {
        let (mut mrr, mut r1, mut r10) = (0.0, 0.0, 0.0);
        let mut scored = Vec::with_capacity(2 * queries.len());
        for (k, &q) in queries.iter().enumerate() {
            let own = sim(q, q + 1);
            let rank = 1
                + (0..n)
                    .filter(|&j| j != q && j != q + 1 && sim(q, j) > own)
                    .count();
            if rank <= 10 {
                mrr += 1.0 / rank as f64;
                r10 += 1.0;
            }
            r1 += f64::from(u8::from(rank == 1));
            scored.push((own, true));
            if queries.len() > 1 {
                let rolled = queries[(k + 1) % queries.len()] + 1;
                scored.push((sim(q, rolled), false));
            }
        }
        let nq = queries.len() as f64;
        m.insert("successive_mrr@10".into(), mrr / nq);
        m.insert("successive_recall@1".into(), r1 / nq);
        m.insert("successive_recall@10".into(), r10 / nq);
        m.insert(
            "successive_accuracy".into(),
            best_threshold_accuracy(&mut scored),
        );
    }

    let (mut err, mut decade, mut counted) = (0.0, 0.0, 0usize);
    for i in 0..n {
        let mut others: Vec<(f32, usize)> = (0..n)
            .filter(|&j| passages[j].doc != passages[i].doc)
            .map(|j| (sim(i, j), j))
            .collect();
        if others.is_empty() {
            continue;
        }
        others.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        others.truncate(k);
        let mut years: Vec<i32> = others.iter().map(|&(_, j)| passages[j].year).collect();
        years.sort_unstable();
        let m = years.len();
        let median = if m % 2 == 1 {
            f64::from(years[m / 2])
        } else {
            (f64::from(years[m / 2 - 1]) + f64::from(years[m / 2])) / 2.0
        };
        let year = passages[i].year;
        err += (median - f64::from(year)).abs();
        let same = years
            .iter()
            .filter(|y| y.div_euclid(10) == year.div_euclid(10))
            .count();
        decade += same as f64 / m as f64;
        counted += 1;
    }
    if counted > 0 {
        m.insert("knn_year_error".into(), err / counted as f64);
        m.insert("knn_same_decade".into(), decade / counted as f64);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Six unit vectors in the plane: document 0 (1900) has three chunks, document 1 (1915)
    /// two, document 2 (1905) one. Their cosines are exact in f32 (products of 0.6 and 0.8).
    fn tiny() -> (Vec<f32>, Vec<Passage>) {
        let e = vec![
            1.0, 0.0, // p0
            0.6, 0.8, // p1
            0.0, 1.0, // p2
            0.8, 0.6, // p3
            -0.6, 0.8, // p4
            0.6, -0.8, // p5
        ];
        let p = |doc, year| Passage { doc, year };
        let passages = vec![
            p(0, 1900),
            p(0, 1900),
            p(0, 1900),
            p(1, 1915),
            p(1, 1915),
            p(2, 1905),
        ];
        (e, passages)
    }

    fn close(m: &Metrics, key: &str, want: f64) {
        assert!((m[key] - want).abs() < 1e-6, "{key}: {} vs {want}", m[key]);
    }

    #[test]
    fn tiny_corpus_gives_the_hand_computed_values() {
        let (e, passages) = tiny();
        let m = corpus_metrics(&e, 2, &passages);
        // Queries p0→p1 (cos 0.6; p3 at 0.8 beats it, p5's tie does not: rank 2), p1→p2
        // (0.8; p3 at 0.96: rank 2), p3→p4 (0; p1, p0, p2 above, p5 ties: rank 4).
        close(&m, "successive_mrr@10", (0.5 + 0.5 + 0.25) / 3.0);
        close(&m, "successive_recall@1", 0.0);
        close(&m, "successive_recall@10", 1.0);
        // True pairs 0.6, 0.8, 0 against rolled pairs p0·p2 = 0, p1·p4 = 0.28, p3·p1 = 0.96:
        // calling the top three similar gets 2 true + 2 rolled right.
        close(&m, "successive_accuracy", 4.0 / 6.0);
        // With every chunk of other documents as neighbours: median years 1915 (p0–p2),
        // 1900 (p3, p4: 1900 1900 1900 1905), 1900 (p5) → errors 15 × 5 and 5; same decade:
        // 1/3 for p0–p2, 0 for p3 and p4, 3/5 for p5.
        close(&m, "knn_year_error", 80.0 / 6.0);
        close(&m, "knn_same_decade", (1.0 + 0.6) / 6.0);
    }

    #[test]
    fn nearest_neighbours_are_the_most_similar_chunks_of_other_documents() {
        let (e, passages) = tiny();
        let m = corpus_metrics_k(&e, 2, &passages, 2);
        // Two neighbours: p0 → p3, p5 (1915, 1905: median 1910); p1 → p3, p4; p2 → p4, p3;
        // p3 → p1, p0; p4 → p2, p1; p5 → p0, p3 (1900, 1915: median 1907.5).
        close(&m, "knn_year_error", (10.0 + 15.0 * 4.0 + 2.5) / 6.0);
        close(&m, "knn_same_decade", (0.5 + 0.5) / 6.0);
    }

    #[test]
    fn a_single_document_has_no_neighbours_and_a_lone_chunk_no_query() {
        let m = corpus_metrics(
            &[1.0, 0.0, 0.0, 1.0],
            2,
            &[Passage { doc: 0, year: 1900 }; 2],
        );
        assert!(m.contains_key("successive_mrr@10") && !m.contains_key("knn_year_error"));
        let m = corpus_metrics(&[1.0, 0.0], 2, &[Passage { doc: 0, year: 1900 }]);
        assert!(m.is_empty());
    }
}
