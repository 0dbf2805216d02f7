//! Held-out evaluation. On held-out pairs, as the reference did it: binary classification of
//! true pairs against pairs with rolled positives (accuracy at the best cosine threshold), and
//! retrieval of each anchor's positive among all held-out positives (MRR@10, Recall@1,
//! Recall@10); for scored pairs, Spearman and Pearson correlation of cosine with the score. On
//! held-out documents' chunks, the corpus measures of `corpus_eval`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::corpus::Corpus;
use encoder::{cosine, SentenceEncoder};

use crate::corpus_eval::{corpus_metrics, held_out_chunks, Passage, LOWER_IS_BETTER};
use crate::data::Examples;
use crate::trainer::{tokenize, Tokenized};
use crate::Error;

pub type Metrics = BTreeMap<String, f64>;

/// Held-out chunks of a corpus, tokenized at the length the model embeds at.
pub struct HeldOutCorpus {
    ids: Vec<Vec<u32>>,
    passages: Vec<Passage>,
}

impl HeldOutCorpus {
    /// The chunks of `docs` in `corpus`, tokenized by `encoder` (at its current length).
    pub fn new(
        encoder: &SentenceEncoder,
        corpus: &Corpus,
        docs: &BTreeSet<String>,
    ) -> Result<Self, Error> {
        let (texts, passages) = held_out_chunks(corpus, docs)?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        Ok(HeldOutCorpus {
            ids: encoder.tokenizer.encode_batch(&refs)?,
            passages,
        })
    }

    /// Number of held-out chunks.
    pub fn len(&self) -> usize {
        self.passages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.passages.is_empty()
    }

    /// [`corpus_metrics`] of `encoder`'s embeddings.
    pub fn metrics(&self, encoder: &SentenceEncoder) -> Result<Metrics, Error> {
        let embeddings = encoder.embed_ids(&self.ids, 32)?;
        Ok(corpus_metrics(&embeddings, encoder.dim(), &self.passages))
    }
}

/// The held-out evaluation: held-out examples (pair metrics, or Spearman for scored pairs)
/// and/or the held-out documents' chunks ([`corpus_metrics`]), and the metric that selects
/// the saved model.
pub struct Evaluation {
    pairs: Option<Tokenized>,
    corpus: Option<HeldOutCorpus>,
    /// `--best-metric` [default: successive_mrr@10 with a corpus, else mrr@10; spearman for
    /// scored pairs].
    pub metric: String,
}

impl Evaluation {
    /// Tokenizes the held-out examples `idx` with `encoder` (at the length the saved model
    /// embeds at). `None` when there is nothing to evaluate.
    pub fn new(
        encoder: &SentenceEncoder,
        examples: &Examples,
        idx: &[usize],
        corpus: Option<HeldOutCorpus>,
        best_metric: Option<String>,
    ) -> Result<Option<Self>, Error> {
        if idx.is_empty() && corpus.is_none() {
            return Ok(None);
        }
        let metric = best_metric.unwrap_or_else(|| match (examples, &corpus) {
            (Examples::Scored(_), _) => "spearman".into(),
            (_, Some(_)) => "successive_mrr@10".into(),
            (_, None) => "mrr@10".into(),
        });
        let pairs = (!idx.is_empty())
            .then(|| tokenize(encoder, examples, idx))
            .transpose()?;
        Ok(Some(Evaluation {
            pairs,
            corpus,
            metric,
        }))
    }

    /// Held-out metrics of `encoder`'s current weights: the pair metrics under their own
    /// names, the corpus measures under theirs.
    pub fn metrics(&self, encoder: &SentenceEncoder) -> Result<Metrics, Error> {
        let mut m = Metrics::new();
        if let Some(data) = &self.pairs {
            let dim = encoder.dim();
            let embed = |c: usize| encoder.embed_ids(&data.columns[c], 64);
            let (first, second) = (embed(0)?, embed(1)?);
            m.extend(match &data.scores {
                Some(s) => scored_metrics(&first, &second, dim, s),
                None => pair_metrics(&first, &second, dim),
            });
        }
        if let Some(corpus) = &self.corpus {
            m.extend(corpus.metrics(encoder)?);
        }
        Ok(m)
    }

    /// The value of the selecting metric in `metrics`.
    pub fn selected(&self, metrics: &Metrics) -> Result<f64, Error> {
        metrics.get(&self.metric).copied().ok_or_else(|| {
            Error::Invalid(format!(
                "unknown --best-metric {:?} (this evaluation has: {})",
                self.metric,
                metrics.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Whether `value` of the selecting metric beats `best` (lower is better for the
    /// year error, higher for everything else).
    pub fn improves(&self, value: f64, best: f64) -> bool {
        if LOWER_IS_BETTER.contains(&self.metric.as_str()) {
            value < best
        } else {
            value > best
        }
    }
}

/// The corpus measures of the model folder `model` on the chunks of `docs` in `corpus`,
/// embedded at the folder's own max_seq_length (as apply-model embeds).
pub fn evaluate_folder(
    model: &Path,
    corpus: &Corpus,
    docs: &BTreeSet<String>,
    device: &str,
) -> Result<Metrics, Error> {
    let encoder = SentenceEncoder::load(model, &encoder::parse_device(device)?)?;
    HeldOutCorpus::new(&encoder, corpus, docs)?.metrics(&encoder)
}

/// `name value, …` with four decimals, for logs and summaries.
pub fn format_metrics(m: &Metrics) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}

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
pub fn best_threshold_accuracy(scored: &mut [(f32, bool)]) -> f64 {
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
