use std::path::PathBuf;
use std::process::ExitCode;

use apply_model::{run, Format, Options, ShardBy};
use clap::Parser;
use common::corpus::{CorpusArgs, EmptyTexts};
use encoder::Precision;

/// `--version`: the version and the build's features; `slurm plan` reads "cuda" here before
/// it queues a GPU stage.
const VERSION: &str = if cfg!(feature = "cuda") {
    concat!(env!("CARGO_PKG_VERSION"), " (features: cuda)")
} else {
    concat!(env!("CARGO_PKG_VERSION"), " (features: cpu only)")
};

// See encoder::alloc for why.
#[global_allocator]
static GLOBAL: encoder::alloc::MiMalloc = encoder::alloc::MiMalloc;

/// Embed every chunk of a corpus with a sentence-transformers model, shard by shard.
///
/// Reads a `chunks` Parquet file (or a chunk-file layout: metadata TSV + `{id}.txt` chunk files) and
/// writes one `embeddings` Parquet file per shard into OUT (doc_id, chunk_idx, year, embedding;
/// rows in input order; L2-normalized iff the model has a Normalize module), plus
/// OUT/MANIFEST.json. Shards: one per decade (as the reference workflow), per N-year range, or N
/// equal parts. Under a Slurm job array each task embeds every N-th shard (N = the array size).
///
/// Resumable: finished shards are skipped (after checking they were made with the same model,
/// input and settings), and a killed shard continues after its last committed part.
///
/// Inputs as people's tools write them: a UTF-8 byte-order mark is ignored in every text file;
/// string columns may be dictionary-encoded (pandas `category`); model folders saved by any
/// sentence-transformers release from 2.x to 6.x load. The corpus is checked before any
/// embedding: a (doc_id, chunk_idx) that appears twice stops the run (exit 2) naming the file
/// and both rows; empty or whitespace-only texts follow --empty-texts. TSV exports quote a
/// doc_id holding a TAB, newline or double quote (RFC 4180 quoting, as pandas and Python's csv
/// module read it), so every export reads back to the same rows.
#[derive(Parser)]
#[command(version = VERSION, verbatim_doc_comment)]
struct Args {
    /// Model folder in the sentence-transformers layout (base model or a tune-embeddings output).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    corpus: CorpusArgs,
    /// Output folder.
    #[arg(long, short)]
    out: PathBuf,
    /// `decade`, `years:N` (N-year ranges) or `equal:N` (N parts of equal row counts).
    #[arg(long, default_value = "decade")]
    shard_by: ShardBy,
    /// Embed only the shards of this array task id t …
    #[arg(long, env = "SLURM_ARRAY_TASK_ID", requires = "num_shards")]
    shard: Option<usize>,
    /// … of this many task slots n: task t takes the shards at (0-based) indices i with
    /// i mod n = t mod n, so arrays may start at 0 (`--array=0-3`) or 1 (`--array=1-4`). Give n
    /// explicitly (slurm's scripts do) to resubmit some tasks (`sbatch --array=2,3`): each
    /// embeds exactly its own shards. From SLURM_ARRAY_TASK_COUNT, the array must be one
    /// contiguous range; an array whose ids (SLURM_ARRAY_TASK_MIN…MAX) span more than n is
    /// refused on every task before anything is embedded.
    #[arg(long, env = "SLURM_ARRAY_TASK_COUNT", requires = "shard")]
    num_shards: Option<usize>,
    /// Also write these exports of every shard (repeatable): tsv, npy.
    #[arg(long = "format", value_enum)]
    formats: Vec<Format>,
    /// At most this many texts per forward pass (texts are sorted by length first)…
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// …and at most this many padded tokens (texts × the longest one's tokens), so a batch
    /// holds many short texts or a few long ones and memory stays bounded.
    #[arg(long, default_value_t = 8192)]
    max_batch_tokens: usize,
    /// Chunks per committed part: a killed run redoes at most one part (also the window within
    /// which texts are sorted by length).
    #[arg(long, default_value_t = 4096)]
    part_rows: usize,
    /// `cpu`, or `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// What the model computes in: f32 (CPU), or bf16/f16 on GPUs, whose half-precision units
    /// are faster (cosine to f32's embeddings: 0.9999 in bf16 on the tests). Output is f32
    /// either way.
    #[arg(long, value_enum, default_value = "f32")]
    precision: Precision,
    /// Chunks whose text is empty or whitespace-only: `stop` (exit 2, naming the file and row of
    /// the first), `skip` (left out of the output, counted in the summary), or `embed` (as
    /// sentence-transformers does: such a text tokenizes to [CLS] [SEP] and gets that embedding).
    #[arg(long, value_enum, default_value = "stop")]
    empty_texts: EmptyTexts,
    /// Print the names of all shards (one per line; outputs are NAME.parquet) and exit.
    #[arg(long)]
    list_shards: bool,
}

/// The lowest and highest task ids of the Slurm array this process is a task of.
fn array_span() -> Option<(usize, usize)> {
    let var = |name| std::env::var(name).ok()?.trim().parse::<usize>().ok();
    var("SLURM_ARRAY_TASK_MIN").zip(var("SLURM_ARRAY_TASK_MAX"))
}

fn main() -> ExitCode {
    encoder::run_candle_ops_inline();
    encoder::alloc::keep_freed_memory();
    common::progress::init_logging();
    let args = Args::parse();
    if let Some(tasks) = args.num_shards {
        if let Err(e) = apply_model::shards::check_array(tasks, array_span()) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let corpus = args.corpus.corpus();
    if args.list_shards {
        return match apply_model::shards::plan(&corpus, args.shard_by) {
            Ok(shards) => {
                shards.iter().for_each(|s| println!("{}", s.name));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(if e.is_bad_input() { 2 } else { 1 })
            }
        };
    }
    let opts = Options {
        model: args.model,
        corpus,
        out_dir: args.out,
        batch_size: args.batch_size.max(1),
        max_batch_tokens: args.max_batch_tokens.max(1),
        part_rows: args.part_rows.max(1),
        device: args.device,
        precision: args.precision,
        shard_by: args.shard_by,
        task: args.shard.zip(args.num_shards),
        exports: args.formats,
        empty_texts: args.empty_texts,
    };
    match run(&opts) {
        Ok(r) => {
            let skipped = r.shards.iter().filter(|s| s.skipped).count();
            eprintln!(
                "embedded {} chunks in {} shards ({} already done) with a {}-dim{} model in {:.1} s ({:.1} chunks/s) → {}",
                r.rows_embedded,
                r.shards.len(),
                skipped,
                r.dim,
                if r.normalized { ", normalized" } else { "" },
                r.seconds,
                r.texts_per_second,
                opts.out_dir.display()
            );
            if r.empty_texts > 0 {
                let done = match r.empty_texts_rule {
                    EmptyTexts::Skip => "skipped",
                    _ => "embedded",
                };
                eprintln!("{} chunks with an empty text {done}", r.empty_texts);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_bad_input() { 2 } else { 1 })
        }
    }
}
