//! Shared by the integration tests: the options of a short training run on the real base model.
#![allow(dead_code)]

use std::path::PathBuf;

use common::testing::base_model;
use encoder::Precision;
use tune_embeddings::data::Source;
use tune_embeddings::{EvalSplit, Loss, Options, SplitBy};

/// One epoch of MNRL from the base model on `train` into `out`: batches of 8, 32 tokens, a
/// fifth held out by document (the CLI's default split; data without doc ids falls back to
/// the pair split), on the CPU in f32. Tests change what they are about with `..options()`.
pub fn options(train: Source, out: PathBuf) -> Options {
    Options {
        base_model: base_model(),
        train,
        out,
        checkpoint_dir: None,
        resume: false,
        loss: Loss::Mnrl { scale: 20.0 },
        epochs: 1,
        batch_size: 8,
        mini_batch_size: None,
        lr: 2e-5,
        weight_decay: 0.01,
        warmup_ratio: 0.1,
        max_grad_norm: 1.0,
        max_seq_length: Some(32),
        seed: 42,
        dropout: None,
        eval: EvalSplit::Fraction(0.2),
        split: SplitBy::Document,
        held_out_docs: None,
        corpus: None,
        eval_steps: None,
        best_metric: None,
        checkpoint_steps: None,
        stop_after_steps: None,
        device: "cpu".into(),
        precision: Precision::F32,
    }
}
