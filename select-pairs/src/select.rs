//! Pair selection inside one document, as the reference workflow did it (with its bugs fixed).

use common::schema::{Category, Side};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Every probability, weight and spacing of the selection; defaults are the reference's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Params {
    /// Probability that a document of n ≥ 2 chunks yields adjacent pairs (else one random pair).
    pub p_adjacent: f64,
    /// Documents with more chunks than this always yield adjacent pairs.
    pub always_adjacent_above: usize,
    /// A document of n chunks yields up to ceil(n / chunks_per_pair) adjacent pairs.
    pub chunks_per_pair: f64,
    /// Category weights of an adjacent pair: successive, synthetic-pair, single-synthetic.
    pub weights: [f64; 3],
    /// Probability of swapping anchor and positive.
    pub p_swap: f64,
    /// After choosing the pair starting at chunk i, starts i−before … i+after are unavailable.
    pub spacing_before: usize,
    pub spacing_after: usize,
    /// Successive pairs only: no paraphrase placeholders, no random pairs, single-chunk
    /// documents skipped.
    pub no_paraphrase: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            p_adjacent: 0.98,
            always_adjacent_above: 20,
            chunks_per_pair: 8.0,
            weights: [0.91, 0.02, 0.07],
            p_swap: 0.5,
            spacing_before: 2,
            spacing_after: 3,
            no_paraphrase: false,
        }
    }
}

impl Params {
    /// The no-paraphrase mode's defaults: spacing i−1 … i+2.
    pub fn no_paraphrase() -> Self {
        Params {
            spacing_before: 1,
            spacing_after: 2,
            no_paraphrase: true,
            ..Params::default()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let prob = |name: &str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(format!("{name} must be in [0, 1], got {p}"))
            }
        };
        prob("p_adjacent", self.p_adjacent)?;
        prob("p_swap", self.p_swap)?;
        if self.weights.iter().any(|w| *w < 0.0 || !w.is_finite())
            || self.weights.iter().sum::<f64>() <= 0.0
        {
            return Err(format!(
                "category weights must be non-negative with a positive sum, got {:?}",
                self.weights
            ));
        }
        if self.chunks_per_pair.is_nan() || self.chunks_per_pair < 1.0 {
            return Err(format!(
                "chunks_per_pair must be ≥ 1, got {}",
                self.chunks_per_pair
            ));
        }
        Ok(())
    }
}

/// A chosen pair, by chunk position within the document (0-based, in chunk order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The two chunk positions, anchor first (after any swap). For a single-synthetic pair
    /// both sides come from `first`'s chunk: one side is the chunk, the other awaits its
    /// paraphrase.
    pub anchor: usize,
    pub positive: usize,
    pub category: Category,
    /// The side paraphrase-gen must write, if any.
    pub paraphrase: Option<Side>,
}

/// Why a document yields no pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Skip {
    /// No-paraphrase mode cannot use a document of one chunk.
    SingleChunk,
}

/// Chooses the pairs of a document of `n` chunks.
pub fn choose(n: usize, params: &Params, rng: &mut ChaCha8Rng) -> Result<Vec<Choice>, Skip> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if n == 1 {
        if params.no_paraphrase {
            return Err(Skip::SingleChunk);
        }
        let pair = Choice {
            anchor: 0,
            positive: 0,
            category: Category::SingleSynthetic,
            paraphrase: Some(Side::Positive),
        };
        return Ok(vec![maybe_swap(pair, params, rng)]);
    }
    let adjacent = params.no_paraphrase
        || n > params.always_adjacent_above
        || rng.random_bool(params.p_adjacent);
    if !adjacent {
        let a = rng.random_range(0..n);
        let mut b = rng.random_range(0..n - 1);
        if b >= a {
            b += 1;
        }
        let pair = Choice {
            anchor: a,
            positive: b,
            category: Category::RandomPair,
            paraphrase: None,
        };
        return Ok(vec![pair]);
    }
    let wanted = (n as f64 / params.chunks_per_pair).ceil() as usize;
    let mut available: Vec<usize> = (0..n - 1).collect();
    let mut pairs = Vec::with_capacity(wanted);
    while pairs.len() < wanted && !available.is_empty() {
        let i = available[rng.random_range(0..available.len())];
        let lo = i.saturating_sub(params.spacing_before);
        let hi = i + params.spacing_after;
        available.retain(|&s| s < lo || s > hi);
        let category = if params.no_paraphrase {
            Category::Successive
        } else {
            pick_category(&params.weights, rng)
        };
        let pair = match category {
            Category::SingleSynthetic => Choice {
                anchor: i,
                positive: i,
                category,
                paraphrase: Some(Side::Positive),
            },
            Category::SyntheticPair => Choice {
                anchor: i,
                positive: i + 1,
                category,
                paraphrase: Some(Side::Positive),
            },
            _ => Choice {
                anchor: i,
                positive: i + 1,
                category,
                paraphrase: None,
            },
        };
        pairs.push(maybe_swap(pair, params, rng));
    }
    // In chunk order, whatever order they were drawn in.
    pairs.sort_by_key(|p| p.anchor.min(p.positive));
    Ok(pairs)
}

fn pick_category(weights: &[f64; 3], rng: &mut ChaCha8Rng) -> Category {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (w, c) in weights.iter().zip([
        Category::Successive,
        Category::SyntheticPair,
        Category::SingleSynthetic,
    ]) {
        if x < *w {
            return c;
        }
        x -= w;
    }
    Category::Successive
}

fn maybe_swap(pair: Choice, params: &Params, rng: &mut ChaCha8Rng) -> Choice {
    if !rng.random_bool(params.p_swap) {
        return pair;
    }
    Choice {
        anchor: pair.positive,
        positive: pair.anchor,
        category: pair.category,
        paraphrase: pair.paraphrase.map(|s| match s {
            Side::Anchor => Side::Positive,
            Side::Positive => Side::Anchor,
        }),
    }
}
