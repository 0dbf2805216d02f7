use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use common::chunk_files::ChunkFileLayout;
use common::corpus::{Corpus, CorpusArgs};
use encoder::Precision;
use tune_embeddings::data::{JsonlFields, Source};
use tune_embeddings::eval::evaluate_folder;
use tune_embeddings::{format_metrics, run, EvalSplit, Loss, Options, SplitBy};

// See encoder::alloc for why.
#[global_allocator]
static GLOBAL: encoder::alloc::MiMalloc = encoder::alloc::MiMalloc;

#[derive(Clone, Copy, ValueEnum)]
enum LossArg {
    /// MultipleNegativesRankingLoss (pairs; a `negative` column/field adds hard negatives).
    Mnrl,
    /// The symmetric MNRL (anchor→positive and positive→anchor).
    MnrlSymmetric,
    /// CoSENT (scored pairs).
    Cosent,
}

#[derive(Clone, Copy, ValueEnum)]
enum SplitArg {
    /// Whole documents held out (needs pairs with doc ids or --held-out-docs).
    Document,
    /// Single pairs held out, as the reference workflow.
    Pair,
}

#[derive(Subcommand)]
enum Cmd {
    /// The corpus measures of a model folder (and of --base-model beside it) on the held-out
    /// documents' chunks: successive-passage MRR@10 / Recall@1 / Recall@10 / accuracy among
    /// all held-out chunks, and the kNN time measures (median year of the 10 nearest chunks
    /// of OTHER held-out documents: mean absolute error in years, share in the same decade).
    /// Each model embeds at its own max_seq_length, as apply-model does.
    Evaluate {
        /// Model folder (sentence-transformers layout).
        #[arg(long)]
        model: PathBuf,
        /// A second folder evaluated side by side, e.g. the base model.
        #[arg(long)]
        base_model: Option<PathBuf>,
        #[command(flatten)]
        corpus: CorpusArgs,
        /// Held-out document list (select-pairs --held-out-docs).
        #[arg(long)]
        held_out_docs: PathBuf,
        /// Also write the metrics as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// `cpu`, or `cuda:N` in a build with `--features cuda`.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

/// `--version`: the version and the build's features; `slurm plan` reads "cuda" here before
/// it queues a GPU stage.
const VERSION: &str = if cfg!(feature = "cuda") {
    concat!(env!("CARGO_PKG_VERSION"), " (features: cuda)")
} else {
    concat!(env!("CARGO_PKG_VERSION"), " (features: cpu only)")
};

/// Fine-tune a sentence-transformers model on training pairs.
///
/// Training data is one of --pairs (select-pairs / paraphrase-gen output), --jsonl
/// (query/positive[/negative] lines; see --anchor-field for the names read) or --scored
/// (sentence1,sentence2,score CSV or Parquet, for a second, CoSENT stage started from the first
/// stage's output with --base-model; its model card then names the original base model and
/// lists both stages). Text files may start with a UTF-8 byte-order mark; CSV is RFC 4180
/// (quoted fields may hold commas and newlines) and error rows count records. Batches never
/// hold the same text twice. A held-out split is evaluated before training, after each
/// epoch and every --eval-steps: accuracy of true vs rolled pairs, MRR@10, Recall@1/@10 (or
/// Spearman for scored pairs); the best evaluation's weights are what OUT receives.
///
/// The split is by document by default: with --held-out-docs (select-pairs writes it) or drawn
/// here from the pairs' doc ids, no document gives both training pairs and evaluation data.
/// With --chunks or --chunk-files, each evaluation also embeds the held-out documents' chunks
/// and computes the corpus measures (see `tune-embeddings evaluate --help`); the default
/// --best-metric is then successive_mrr@10.
///
/// Checkpoints (weights, optimizer, position) go to --checkpoint-dir after each epoch and
/// every --checkpoint-steps; --resume continues exactly where a killed or stopped run left off.
///
/// Reference workflow values, where our defaults differ: 9 epochs, batch 80,
/// max_seq_length 128 (saved into the model), split by pair. Our defaults (2 epochs, batch
/// 32, lr 5e-5, the base model's length) are the setting measured on the bundled sample's
/// held-out documents: README, "Does tuning help?".
#[derive(Parser)]
#[command(
    version = VERSION,
    verbatim_doc_comment,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Base model folder (sentence-transformers layout; BERT or RoBERTa), e.g. models/all-MiniLM-L6-v2.
    #[arg(long, required = true)]
    base_model: Option<PathBuf>,
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
    #[arg(long, short, required = true)]
    out: Option<PathBuf>,
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
    /// Passes over the training data (the sample's measurements: README, "Does tuning help?").
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Examples per batch (MNRL: the in-batch negatives).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Gradient caching: embed batches in mini-batches of this size (same loss and gradients,
    /// memory of one mini-batch), so batches of 256+ fit.
    #[arg(long)]
    mini_batch_size: Option<usize>,
    /// Peak learning rate (AdamW), the reference's.
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Fraction of steps of linear warmup, then linear decay to 0.
    #[arg(long, default_value_t = 0.1)]
    warmup_ratio: f64,
    /// Gradient clipping (global L2 norm).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Tokens per text while training [default: the base model's max_seq_length]. Evaluation
    /// and the saved model keep the base model's length: a shorter training length never
    /// shortens what the tuned model embeds.
    #[arg(long)]
    max_seq_length: Option<usize>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Override the model's dropout probability (hidden and attention).
    #[arg(long)]
    dropout: Option<f32>,
    /// Examples held out for evaluation (at most a fifth of the data; with the document
    /// split, the share of documents this stands for).
    #[arg(long, default_value_t = 2200, conflicts_with = "eval_fraction")]
    eval_rows: usize,
    /// Hold out this fraction (of the documents with the document split) instead of --eval-rows.
    #[arg(long)]
    eval_fraction: Option<f64>,
    /// What is held out: whole documents, or single pairs (the reference's way).
    #[arg(long, value_enum, default_value = "document")]
    split: SplitArg,
    /// Held-out document list (select-pairs --held-out-docs): these documents' pairs are not
    /// trained on, and their chunks are the corpus measures' (with --chunks / --chunk-files).
    #[arg(long)]
    held_out_docs: Option<PathBuf>,
    /// `chunks` Parquet file of the corpus, for the corpus measures on held-out documents.
    #[arg(long, conflicts_with = "chunk_files")]
    chunks: Option<PathBuf>,
    /// Chunk-file layout folder of the corpus instead (metadata.tsv with paperId and year,
    /// chunks/{id}.txt).
    #[arg(long, value_name = "DIR")]
    chunk_files: Option<PathBuf>,
    /// Also evaluate every N steps.
    #[arg(long)]
    eval_steps: Option<u64>,
    /// Metric that selects the saved model [default: successive_mrr@10 with a corpus, else
    /// mrr@10; spearman for scored pairs]. Any evaluated metric: accuracy, mrr@10, recall@1,
    /// recall@10, successive_accuracy, successive_mrr@10, successive_recall@1,
    /// successive_recall@10, knn_same_decade, knn_year_error (lower is better).
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
    encoder::alloc::keep_freed_memory();
    common::progress::init_logging();
    let a = Args::parse();
    if let Some(Cmd::Evaluate {
        model,
        base_model,
        corpus,
        held_out_docs,
        report,
        device,
    }) = a.command
    {
        return evaluate(
            &model,
            base_model.as_deref(),
            &corpus.corpus(),
            &held_out_docs,
            report.as_deref(),
            &device,
        );
    }
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
    let corpus = match (a.chunks, a.chunk_files) {
        (Some(p), _) => Some(Corpus::Chunks(p)),
        (_, Some(dir)) => Some(Corpus::ChunkFiles(ChunkFileLayout::in_dir(&dir))),
        _ => None,
    };
    let opts = Options {
        base_model: a.base_model.expect("required"),
        train,
        out: a.out.expect("required"),
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
        split: match a.split {
            SplitArg::Document => SplitBy::Document,
            SplitArg::Pair => SplitBy::Pair,
        },
        held_out_docs: a.held_out_docs,
        corpus,
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
            if r.held_out_documents > 0 {
                eprintln!(
                    "  held out: {} documents ({} pairs, {} chunks)",
                    r.held_out_documents, r.eval_examples, r.held_out_chunks
                );
            }
            if let Some(b) = &r.before {
                eprintln!("  held-out base model: {}", format_metrics(b));
            }
            if let Some(b) = &r.best {
                eprintln!("  held-out tuned:      {}", format_metrics(b));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_bad_input() { 2 } else { 1 })
        }
    }
}

/// The `evaluate` subcommand: prints one line per metric, model beside base.
fn evaluate(
    model: &std::path::Path,
    base: Option<&std::path::Path>,
    corpus: &Corpus,
    list: &std::path::Path,
    report: Option<&std::path::Path>,
    device: &str,
) -> ExitCode {
    let result = (|| -> Result<_, tune_embeddings::Error> {
        let docs = common::split::read_doc_list(list)?;
        let tuned = evaluate_folder(model, corpus, &docs, device)?;
        let base = base
            .map(|b| evaluate_folder(b, corpus, &docs, device))
            .transpose()?;
        Ok((docs.len(), tuned, base))
    })();
    let (docs, tuned, base) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(if e.is_bad_input() { 2 } else { 1 });
        }
    };
    println!("held-out documents: {docs} (kNN pool: the held-out chunks of other documents)");
    println!("{:<22} {:>10} {:>10}", "metric", "base", "model");
    for (k, v) in &tuned {
        let b = base.as_ref().and_then(|b| b.get(k));
        let b = b.map_or("-".to_string(), |b| format!("{b:.4}"));
        println!("{k:<22} {b:>10} {v:>10.4}");
    }
    if let Some(path) = report {
        let json = serde_json::json!({"held_out_documents": docs, "model": tuned, "base": base});
        let bytes = serde_json::to_vec_pretty(&json).expect("json");
        if let Err(e) = common::atomic::write_atomic(path, &bytes) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
