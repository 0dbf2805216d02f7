use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use report::{run, Options};

/// One self-contained HTML page for a run folder: what each stage produced, as figures and
/// tables, instead of a notebook.
///
/// Reads whatever the run folder holds — pairs/ (select-pairs), pairs-filled/
/// (paraphrase-gen), model/ (tune-embeddings: metrics.jsonl, training_args.json),
/// embeddings/ (apply-model), precocity/ — plus the corpus and the base model when given, and
/// writes OUT/index.html (figures inline as SVG, no script, nothing loaded from the network),
/// each figure as OUT/<name>.svg, the embedding maps' 2-D coordinates as
/// OUT/map-{base,tuned}.parquet (doc_id, chunk_idx, year, x, y) and OUT/MANIFEST.json.
///
/// Sections: Corpus, Pairs, Training, Embeddings over time, Time tracking, Precocity. A
/// section whose inputs are missing is replaced by a note saying which. The same inputs give
/// byte-identical files. Prints the path of index.html.
///
/// In the pipeline: `report . --out report --base-model <base> --corpus <chunks>`, run in the
/// run folder. (The reference workflow has no such step: its figures were drawn in notebooks.)
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// The run folder.
    run_dir: PathBuf,
    /// Output folder (replaced whole when the page is written).
    #[arg(long, short)]
    out: PathBuf,
    /// The base model (sentence-transformers folder): the token-length distribution and the
    /// base model's map. Default: the base model named in model/training_args.json, if it
    /// exists.
    #[arg(long)]
    base_model: Option<PathBuf>,
    /// The corpus (`chunks` Parquet, or a chunk-file layout folder): counts per year, token
    /// lengths, the texts of sampled and precocious chunks.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Chunks in the embedding map's seeded sample (each is embedded by the base model here).
    #[arg(long, default_value_t = 2000)]
    map_sample: usize,
    /// At most about this many chunks are tokenized for the length distribution (a seeded
    /// sample; all of them in smaller corpora).
    #[arg(long, default_value_t = 20_000)]
    length_sample: usize,
    /// Seed of both samples.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> ExitCode {
    encoder::run_candle_ops_inline();
    common::progress::init_logging();
    let a = Args::parse();
    let opts = Options {
        run_dir: a.run_dir,
        out: a.out,
        base_model: a.base_model,
        corpus: a.corpus,
        map_sample: a.map_sample,
        length_sample: a.length_sample,
        seed: a.seed,
    };
    match run(&opts) {
        Ok(report) => {
            for (id, note) in &report.sections {
                match note {
                    None => eprintln!("  {id}: shown"),
                    Some(n) => eprintln!("  {id}: not shown ({n})"),
                }
            }
            eprintln!(
                "  {} files, index.html {:.1} kB",
                report.files.len(),
                report.page_bytes as f64 / 1000.0
            );
            println!("{}", report.index.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_bad_input() { 2 } else { 1 })
        }
    }
}
