//! tune-embeddings: fine-tunes the encoder on pairs (MNRL, optionally cached) or on scored
//! pairs (CoSENT), evaluates on a held-out split, checkpoints, resumes exactly, and saves a
//! sentence-transformers folder.
//!
//! `run` drives a loop (`training`) over named parts: `trainer` (one optimization step), `loss/` (one loss per
//! file, GradCache beside MNRL), `optim` (AdamW, clipping, f16 loss scaling), `batching`
//! (batches without duplicate texts), `eval` (held-out metrics), `checkpoint` (the checkpoint
//! folder, exact resume), `metrics_log` (metrics.jsonl), `data` (the input formats).

pub mod batching;
pub mod checkpoint;
pub mod corpus_eval;
pub mod data;
pub mod eval;
pub mod loss;
pub mod metrics_log;
pub mod optim;
pub mod split;
pub mod trainer;
mod training;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use common::corpus::Corpus;
use common::provenance::sha256_file;
use encoder::{Precision, SentenceEncoder};
use serde::Serialize;

use data::{Examples, Source};
pub use eval::format_metrics;
use eval::{Evaluation, HeldOutCorpus, Metrics};
pub use loss::Loss;
pub use split::{split, split_pairs, EvalSplit, Split, SplitBy};
pub use trainer::{learning_rate, tokenize, Tokenized, Trainer};
use training::Training;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Common(#[from] common::Error),
    #[error(transparent)]
    Encoder(#[from] encoder::Error),
    #[error("{0}")]
    Data(String),
    #[error("{0}")]
    Invalid(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Common(e) => e.is_bad_input(),
            Error::Encoder(e) => e.is_bad_input(),
            Error::Data(_) | Error::Invalid(_) | Error::Checkpoint(_) => true,
            Error::Candle(_) => false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub base_model: PathBuf,
    pub train: Source,
    pub out: PathBuf,
    /// Default: `<out>.checkpoints` beside the output.
    pub checkpoint_dir: Option<PathBuf>,
    pub resume: bool,
    pub loss: Loss,
    pub epochs: usize,
    pub batch_size: usize,
    /// GradCache mini-batch size; `None` embeds each batch in one pass.
    pub mini_batch_size: Option<usize>,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_ratio: f64,
    pub max_grad_norm: f64,
    /// Tokens per text while training; `None`: the base model's own max_seq_length. Evaluation
    /// and the saved model keep the base model's length whatever this is.
    pub max_seq_length: Option<usize>,
    pub seed: u64,
    /// Overrides the model's hidden and attention dropout.
    pub dropout: Option<f32>,
    pub eval: EvalSplit,
    pub split: SplitBy,
    /// The held-out document list (select-pairs --held-out-docs); drawn here when absent.
    pub held_out_docs: Option<PathBuf>,
    /// The corpus whose held-out documents' chunks give the corpus measures.
    #[serde(serialize_with = "corpus_path")]
    pub corpus: Option<Corpus>,
    /// Also evaluate every this many steps.
    pub eval_steps: Option<u64>,
    /// Metric that picks the saved model (lower is better for knn_year_error, higher for
    /// the others).
    pub best_metric: Option<String>,
    pub checkpoint_steps: Option<u64>,
    /// Stop after this many steps in this invocation (checkpointed; continue with `resume`).
    pub stop_after_steps: Option<u64>,
    pub device: String,
    /// What the transformer computes in; the weights and optimizer stay f32 (autocast).
    pub precision: Precision,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub output: PathBuf,
    pub steps: u64,
    pub finished: bool,
    pub train_examples: usize,
    pub eval_examples: usize,
    /// The held-out split made (a document split falls back to pairs without doc ids).
    pub split: SplitBy,
    /// Documents held out (document split).
    pub held_out_documents: usize,
    /// Their chunks, when a corpus was given.
    pub held_out_chunks: usize,
    /// Evaluation before any training (absent when resumed past it).
    pub before: Option<Metrics>,
    /// The evaluation of the saved model.
    pub best: Option<Metrics>,
    /// The step whose weights were saved; 0 when no evaluation beat the base model, so the
    /// saved weights are the base model's.
    pub saved_step: Option<u64>,
    pub last_loss: Option<f64>,
    pub pairs_per_second: f64,
}

pub fn run(opts: &Options) -> Result<Report, Error> {
    validate(opts)?;
    let examples = data::load(&opts.train)?;
    let data_sha = sha256_file(opts.train.path())?;
    if matches!(examples, Examples::Scored(_)) != matches!(opts.loss, Loss::CoSent { .. }) {
        return Err(Error::Invalid(
            "CoSENT trains on scored pairs and MNRL on pairs: pick the loss that fits the data"
                .into(),
        ));
    }
    let split = split(opts, examples.len(), data::doc_ids(&opts.train)?.as_deref())?;
    let (eval_idx, train_idx) = (&split.eval_idx, &split.train_idx);
    if train_idx.len() < opts.batch_size {
        return Err(Error::Invalid(format!(
            "batch size {} is larger than the {} training examples left after holding out {} for evaluation",
            opts.batch_size,
            train_idx.len(),
            eval_idx.len()
        )));
    }
    let encoder = SentenceEncoder::load(&opts.base_model, &encoder::parse_device(&opts.device)?)?;
    let base_sha = sha256_file(&encoder.folder.weights_path())?;
    let corpus = match (&opts.corpus, &split.docs) {
        (Some(c), Some(docs)) => Some(HeldOutCorpus::new(&encoder, c, docs)?),
        (Some(_), None) => return Err(Error::Invalid("the corpus measures need held-out documents: --split document with pairs that have doc ids, or --held-out-docs".into())),
        (None, _) => None,
    };
    let held_out_chunks = corpus.as_ref().map_or(0, HeldOutCorpus::len);
    let evaluation = Evaluation::new(
        &encoder,
        &examples,
        eval_idx,
        corpus,
        opts.best_metric.clone(),
    )?;
    let mut t = Training::new(
        opts, encoder, &examples, train_idx, evaluation, &data_sha, &base_sha,
    )?;
    let mut report = Report {
        output: opts.out.clone(),
        steps: t.state.step,
        finished: false,
        train_examples: train_idx.len(),
        eval_examples: eval_idx.len(),
        split: split.by,
        held_out_documents: split.docs.as_ref().map_or(0, BTreeSet::len),
        held_out_chunks,
        before: None,
        best: None,
        saved_step: None,
        last_loss: None,
        pairs_per_second: 0.0,
    };
    if t.state.step == 0 && t.state.batch_in_epoch == 0 && t.state.epoch == 0 {
        report.before = t.evaluate()?;
    }
    let start = Instant::now();
    let (trained_pairs, stopped) = t.train_epochs(&mut report)?;
    report.steps = t.state.step;
    report.pairs_per_second = trained_pairs as f64 / start.elapsed().as_secs_f64().max(1e-9);
    if stopped {
        t.ckpt.save_last(&t.state, &t.trainer)?;
        tracing::info!("stopped at step {}; continue with --resume", t.state.step);
        return Ok(report);
    }
    // The saved model is the best evaluated one (the last one without an evaluation split).
    if let Some(best) = &t.state.best {
        report.saved_step = Some(best.step);
        if best.step == 0 {
            tracing::warn!(
                "no evaluation beat the base model on {}: the saved weights are the base model's \
                 (more data or epochs, another --lr, or --best-metric)",
                best.metric
            );
        }
        report.best = t.ckpt.restore_best(&t.trainer)?;
    }
    let data = format!(
        "{} ({} training, {} held-out examples, {} held-out documents; sha256 {data_sha})",
        opts.train.path().display(),
        train_idx.len(),
        eval_idx.len(),
        report.held_out_documents
    );
    t.save_model(&report, data, &data_sha, &base_sha)?;
    report.finished = true;
    Ok(report)
}

fn validate(opts: &Options) -> Result<(), Error> {
    let bad = |m: String| Err(Error::Invalid(m));
    if opts.batch_size < 2 {
        return bad(format!(
            "batch size must be at least 2 (in-batch negatives), got {}",
            opts.batch_size
        ));
    }
    if opts.epochs == 0 {
        return bad("epochs must be at least 1".into());
    }
    if opts.mini_batch_size == Some(0) {
        return bad("mini-batch size must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&opts.warmup_ratio) {
        return bad(format!(
            "warmup ratio must be in [0, 1], got {}",
            opts.warmup_ratio
        ));
    }
    if let EvalSplit::Fraction(f) = opts.eval {
        if !(0.0..0.9).contains(&f) {
            return bad(format!("eval fraction must be in [0, 0.9), got {f}"));
        }
    }
    if let Some(p) = opts.dropout {
        if !(0.0..1.0).contains(&p) {
            return bad(format!("dropout must be in [0, 1), got {p}"));
        }
    }
    Ok(())
}

/// Options record the corpus as a path (the Parquet file, or the chunk-file layout's metadata
/// and folder), for provenance and the fingerprint.
fn corpus_path<S: serde::Serializer>(c: &Option<Corpus>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        None => s.serialize_none(),
        Some(Corpus::Chunks(p)) => s.serialize_str(&p.display().to_string()),
        Some(Corpus::ChunkFiles(l)) => s.serialize_str(&format!(
            "{} + {}",
            l.metadata.display(),
            l.chunks_dir.display()
        )),
    }
}
