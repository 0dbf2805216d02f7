use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use apply_model::{run, Options};
use clap::Parser;
use common::corpus::Corpus;
use common::seed_layout::SeedLayout;

// glibc malloc's churn on the many short-lived tensors costs about a quarter of the throughput.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Embed every chunk of a corpus with a sentence-transformers model.
///
/// Reads a `chunks` Parquet file (or a seed layout: metadata TSV + `{id}.txt` chunk files) and
/// writes OUT/embeddings.parquet (doc_id, chunk_idx, year, embedding) in input order, plus
/// OUT/MANIFEST.json. Embeddings are L2-normalized iff the model has a Normalize module.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Model folder in the sentence-transformers layout (base model or a tune-embeddings output).
    #[arg(long)]
    model: PathBuf,
    /// `chunks` Parquet file to embed.
    #[arg(
        long,
        conflicts_with = "seed_dir",
        required_unless_present = "seed_dir"
    )]
    chunks: Option<PathBuf>,
    /// Seed layout folder (metadata.tsv + chunks/) to embed instead of a Parquet file.
    #[arg(long)]
    seed_dir: Option<PathBuf>,
    /// Output folder.
    #[arg(long, short)]
    out: PathBuf,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Chunks read, length-sorted and embedded together (bounds memory).
    #[arg(long, default_value_t = 4096)]
    window: usize,
    /// `cpu`, or `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn main() -> ExitCode {
    common::progress::init_logging();
    let args = Args::parse();
    let corpus = match (args.chunks, args.seed_dir) {
        (Some(path), _) => Corpus::Chunks(path),
        (None, Some(dir)) => Corpus::Seed(SeedLayout::in_dir(&dir)),
        (None, None) => unreachable!("clap requires one"),
    };
    let opts = Options {
        model: args.model,
        corpus,
        out_dir: args.out,
        batch_size: args.batch_size,
        window: args.window,
        device: args.device,
    };
    match run(&opts).context("apply-model failed") {
        Ok(r) => {
            eprintln!(
                "embedded {} chunks ({}-dim{}) in {:.1} s, {:.1} chunks/s → {}",
                r.rows,
                r.dim,
                if r.normalized { ", normalized" } else { "" },
                r.seconds,
                r.texts_per_second,
                r.output.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            let bad_input = e
                .downcast_ref::<common::Error>()
                .is_some_and(|e| e.is_bad_input());
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}
