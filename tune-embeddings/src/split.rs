//! The held-out split: by document (no document gives both training and evaluation data) or,
//! as the reference workflow, by pair.

use std::collections::BTreeSet;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::{Error, Options};

/// How many training examples (pair split) or what fraction of the documents (document
/// split) are held out for evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalSplit {
    Rows(usize),
    Fraction(f64),
}

/// What the held-out split is drawn over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitBy {
    /// Whole documents: no document gives both training and evaluation data (the default;
    /// needs pairs with doc ids or a held-out document list).
    Document,
    /// Single examples, as the reference workflow (evaluation pairs may come from the same
    /// documents, even neighbouring passages, as training pairs).
    Pair,
}

/// The held-out split: example indices for evaluation and for training, and the held-out
/// documents (document split, or a list given with a pair split).
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The split made: `Pair` when a document split was asked for but the data has no doc
    /// ids.
    pub by: SplitBy,
    pub eval_idx: Vec<usize>,
    pub train_idx: Vec<usize>,
    pub docs: Option<BTreeSet<String>>,
}

/// Splits `n` examples, `doc_ids` giving each one's document when the data records it.
///
/// Document split: the documents of `--held-out-docs`, or [`common::split::held_out_documents`]
/// of the examples' documents at `--eval-fraction` (`--eval-rows` as the fraction of examples
/// it stands for); every example of a held-out document is held out. Without doc ids (JSONL,
/// scored pairs) it falls back to the pair split: a permutation seeded by `opts.seed`, whose
/// first rows are held out.
pub fn split(opts: &Options, n: usize, doc_ids: Option<&[String]>) -> Result<Split, Error> {
    let listed = opts
        .held_out_docs
        .as_deref()
        .map(common::split::read_doc_list)
        .transpose()?;
    let by_document = match doc_ids {
        Some(ids) if opts.split == SplitBy::Document => Some(ids),
        _ => None,
    };
    let Some(ids) = by_document else {
        if opts.split == SplitBy::Document {
            tracing::warn!(
                "{} records no document per pair: holding out single pairs (--split pair)",
                opts.train.path().display()
            );
        }
        let (eval_idx, train_idx) = split_pairs(opts.eval, opts.seed, n);
        return Ok(Split {
            by: SplitBy::Pair,
            eval_idx,
            train_idx,
            docs: listed,
        });
    };
    let docs = listed.unwrap_or_else(|| {
        let fraction = match opts.eval {
            EvalSplit::Fraction(f) => f,
            EvalSplit::Rows(r) => r.min(n / 5) as f64 / n.max(1) as f64,
        };
        common::split::held_out_documents(ids.iter().map(String::as_str), fraction, opts.seed)
    });
    let (eval_idx, train_idx) = (0..n).partition(|&i| docs.contains(&ids[i]));
    Ok(Split {
        by: SplitBy::Document,
        eval_idx,
        train_idx,
        docs: Some(docs),
    })
}

/// The pair split of `n` examples: a permutation seeded by `seed`, whose first rows are held
/// out.
pub fn split_pairs(eval: EvalSplit, seed: u64, n: usize) -> (Vec<usize>, Vec<usize>) {
    let eval_n = match eval {
        EvalSplit::Rows(r) => r.min(n / 5),
        EvalSplit::Fraction(f) => ((n as f64) * f).round() as usize,
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let train = order.split_off(eval_n);
    (order, train)
}
