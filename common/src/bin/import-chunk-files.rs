//! Converts a chunk-file layout (metadata TSV + `{id}.txt` chunk files) into a `chunks` Parquet file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use common::chunk_files::{import_chunk_files, ChunkFileLayout};

/// Import the chunk-file layout into a `chunks` Parquet table.
///
/// The layout is a metadata TSV with a header (one row per document; an id and a year column
/// among any others) and a folder holding one `{id}.txt` per document, whose lines are
/// `chunk_idx<TAB>chunk text`. Documents without a chunk file, malformed lines and lines with
/// an empty text are reported with file:line and skipped; a document id listed twice or a chunk
/// index twice in one file stops the import naming both lines (which copy is meant cannot be
/// guessed). A UTF-8 byte-order mark at the start of any file is ignored. The output is
/// written only if the import succeeds.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Folder holding `metadata.tsv` and `chunks/` (the defaults of --metadata/--chunks-dir).
    dir: PathBuf,
    /// Output Parquet file.
    #[arg(long, short)]
    out: PathBuf,
    /// Metadata TSV [default: DIR/metadata.tsv].
    #[arg(long)]
    metadata: Option<PathBuf>,
    /// Folder of `{id}.txt` chunk files [default: DIR/chunks].
    #[arg(long)]
    chunks_dir: Option<PathBuf>,
    /// Metadata column holding the document id.
    #[arg(long, default_value = "paperId")]
    id_column: String,
    /// Metadata column holding the year.
    #[arg(long, default_value = "year")]
    year_column: String,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    common::progress::init_logging();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let bad_input = e
                .downcast_ref::<common::Error>()
                .is_some_and(|e| e.is_bad_input());
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut layout = ChunkFileLayout::in_dir(&args.dir);
    layout.metadata = args.metadata.unwrap_or(layout.metadata);
    layout.chunks_dir = args.chunks_dir.unwrap_or(layout.chunks_dir);
    layout.id_column = args.id_column;
    layout.year_column = args.year_column;
    let report = import_chunk_files(&layout, &args.out, "import-chunk-files")
        .with_context(|| format!("importing {}", layout.metadata.display()))?;
    for p in &report.malformed {
        tracing::warn!("skipped {p}");
    }
    for d in &report.missing_chunk_files {
        tracing::warn!(
            "no chunk file for document {d}: {}",
            layout.chunk_file(d).display()
        );
    }
    for d in &report.empty_documents {
        tracing::warn!("document {d} has no usable chunk");
    }
    eprintln!(
        "imported {} chunks of {} documents into {} ({} skipped lines, {} missing chunk files, {} empty documents)",
        report.chunks,
        report.documents,
        args.out.display(),
        report.malformed.len(),
        report.missing_chunk_files.len(),
        report.empty_documents.len()
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
