use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use common::model::Precision;
use tune_embeddings::data::{JsonlFields, Source};
use tune_embeddings::{format_metrics, run, EvalSplit, Loss, Options};

// See common::alloc for why.
#[global_allocator]
static GLOBAL: common::alloc::MiMalloc = common::alloc::MiMalloc;

#[derive(Clone, Copy, ValueEnum)]
enum LossArg {
    /// MultipleNegativesRankingLoss (pairs; a `negative` column/field adds hard negatives).
    Mnrl,
    /// The symmetric MNRL (anchor→positive and positive→anchor).
    MnrlSymmetric,
    /// CoSENT (scored pairs).
    Cosent,
}

/// Fine-tune a sentence-transformers model on training pairs.
///
/// Training data is one of --pairs (select-pairs / paraphrase-gen output), --jsonl
/// (query/positive[/negative] lines; see --anchor-field for the names read) or --scored
/// (sentence1,sentence2,score CSV or Parquet, for a second, CoSENT stage started from the first
/// stage's output with --base-model; its model card then names the original base model and
/// lists both stages). Text files may start with a UTF-8 byte-order mark; CSV is RFC 4180
/// (quoted fields may hold commas and newlines) and error rows count records. Batches
/// never hold the same text twice. A held-out split is evaluated before training, after each
/// epoch and every --eval-steps: accuracy of true vs rolled pairs, MRR@10, Recall@1/@10 (or
/// Spearman for scored pairs); the best evaluation's weights are what OUT receives.
///
/// Checkpoints (weights, optimizer, position) go to --checkpoint-dir after each epoch and
/// every --checkpoint-steps; --resume continues exactly where a killed or stopped run left off.
///
/// Reference workflow values, where our defaults differ: 9 epochs, batch 80, lr 5e-5.
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Base model folder (sentence-transformers layout; BERT or RoBERTa), e.g. models/all-MiniLM-L6-v2.
    #[arg(long)]
    base_model: PathBuf,
    /// `pairs` Parquet file.
    #[arg(long, group = "data")]
    pairs: Option<PathBuf>,
    /// JSONL, one object per line: the query side, the side it should find, and an optional
    /// hard negative (other fields, e.g. `answer`, are ignored).
    #[arg(long, group = "data")]
    jsonl: Option<PathBuf>,
    /// JSONL field of the query side [default: the one of query, anchor, question, sentence1
    /// that a line has].
    #[arg(long, requires = "jsonl")]
    anchor_field: Option<String>,
    /// JSONL field of the side the query should find [default: the one of positive, context,
    /// passage, sentence2 that a line has].
    #[arg(long, requires = "jsonl")]
    positive_field: Option<String>,
    /// JSONL field of an optional hard negative [default: negative or hard_negative].
    #[arg(long, requires = "jsonl")]
    negative_field: Option<String>,
    /// Scored pairs: CSV with header sentence1,sentence2,score or Parquet with those columns.
    #[arg(long, group = "data")]
    scored: Option<PathBuf>,
    /// Output model folder.
    #[arg(long, short)]
    out: PathBuf,
    /// Checkpoint folder [default: OUT.checkpoints beside OUT].
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Continue from the last checkpoint (same data and options required).
    #[arg(long)]
    resume: bool,
    /// Loss [default: mnrl for pairs, cosent for --scored].
    #[arg(long, value_enum)]
    loss: Option<LossArg>,
    /// Similarity scale of MNRL (cosine × scale) and CoSENT.
    #[arg(long, default_value_t = 20.0)]
    scale: f64,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Examples per batch (MNRL: the in-batch negatives).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Gradient caching: embed batches in mini-batches of this size (same loss and gradients,
    /// memory of one mini-batch), so batches of 256+ fit.
    #[arg(long)]
    mini_batch_size: Option<usize>,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 2e-5)]
    lr: f64,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Fraction of steps of linear warmup, then linear decay to 0.
    #[arg(long, default_value_t = 0.1)]
    warmup_ratio: f64,
    /// Gradient clipping (global L2 norm).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Tokens per text while training (and in the saved model's sentence_bert_config.json).
    #[arg(long, default_value_t = 128)]
    max_seq_length: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Override the model's dropout probability (hidden and attention).
    #[arg(long)]
    dropout: Option<f32>,
    /// Examples held out for evaluation (at most a fifth of the data).
    #[arg(long, default_value_t = 2200, conflicts_with = "eval_fraction")]
    eval_rows: usize,
    /// Hold out this fraction instead of --eval-rows.
    #[arg(long)]
    eval_fraction: Option<f64>,
    /// Also evaluate every N steps.
    #[arg(long)]
    eval_steps: Option<u64>,
    /// Metric that selects the saved model [default: mrr@10; spearman for scored pairs].
    #[arg(long)]
    best_metric: Option<String>,
    /// Also checkpoint every N steps.
    #[arg(long)]
    checkpoint_steps: Option<u64>,
    /// Stop (with a checkpoint) after N steps of this invocation, e.g. to fit a Slurm time limit.
    #[arg(long)]
    stop_after_steps: Option<u64>,
    /// `cpu`, or `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// What the transformer computes in. bf16 and f16 are mixed precision for GPUs: weights,
    /// optimizer, pooling and loss stay f32; f16 adds dynamic loss scaling (steps whose
    /// gradients overflow are skipped, as torch's GradScaler does).
    #[arg(long, value_enum, default_value = "f32")]
    precision: Precision,
}

fn main() -> ExitCode {
    common::alloc::keep_freed_memory();
    common::progress::init_logging();
    let a = Args::parse();
    let train = match (a.pairs, a.jsonl, a.scored) {
        (Some(p), _, _) => Source::Pairs(p),
        (_, Some(p), _) => Source::Jsonl(
            p,
            JsonlFields {
                anchor: a.anchor_field,
                positive: a.positive_field,
                negative: a.negative_field,
            },
        ),
        (_, _, Some(p)) => Source::Scored(p),
        _ => {
            eprintln!("error: give the training data with --pairs, --jsonl or --scored");
            return ExitCode::from(2);
        }
    };
    let loss = match a.loss.unwrap_or(if matches!(train, Source::Scored(_)) {
        LossArg::Cosent
    } else {
        LossArg::Mnrl
    }) {
        LossArg::Mnrl => Loss::Mnrl { scale: a.scale },
        LossArg::MnrlSymmetric => Loss::MnrlSymmetric { scale: a.scale },
        LossArg::Cosent => Loss::CoSent { scale: a.scale },
    };
    let opts = Options {
        base_model: a.base_model,
        train,
        out: a.out,
        checkpoint_dir: a.checkpoint_dir,
        resume: a.resume,
        loss,
        epochs: a.epochs,
        batch_size: a.batch_size,
        mini_batch_size: a.mini_batch_size,
        lr: a.lr,
        weight_decay: a.weight_decay,
        warmup_ratio: a.warmup_ratio,
        max_grad_norm: a.max_grad_norm,
        max_seq_length: a.max_seq_length,
        seed: a.seed,
        dropout: a.dropout,
        eval: a
            .eval_fraction
            .map_or(EvalSplit::Rows(a.eval_rows), EvalSplit::Fraction),
        eval_steps: a.eval_steps,
        best_metric: a.best_metric,
        checkpoint_steps: a.checkpoint_steps,
        stop_after_steps: a.stop_after_steps,
        device: a.device,
        precision: a.precision,
    };
    match run(&opts) {
        Ok(r) => {
            if !r.finished {
                eprintln!(
                    "stopped after step {} (checkpointed); rerun with --resume to continue",
                    r.steps
                );
                return ExitCode::SUCCESS;
            }
            eprintln!(
                "trained {} steps on {} examples ({:.1} pairs/s) → {}",
                r.steps,
                r.train_examples,
                r.pairs_per_second,
                r.output.display()
            );
            if let Some(b) = &r.before {
                eprintln!("  held-out before: {}", format_metrics(b));
            }
            if let Some(b) = &r.best {
                eprintln!("  held-out saved:  {}", format_metrics(b));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_bad_input() { 2 } else { 1 })
        }
    }
}
