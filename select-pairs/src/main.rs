use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use common::corpus::CorpusArgs;
use select_pairs::{run, Options, Params};

/// Select training pairs from a chunked corpus.
///
/// Per document (chunks in chunk order):
///   * 1 chunk: one `single-synthetic` pair — the chunk and an empty side that paraphrase-gen
///     fills with a paraphrase of it.
///   * n ≥ 2 chunks: with probability --p-adjacent (always when n > --always-adjacent-above),
///     up to ceil(n / --chunks-per-pair) adjacent pairs (i, i+1) drawn at random; after
///     choosing start i, starts i−2 … i+3 are no longer available, so pairs never touch. Each
///     pair is `successive`, `synthetic-pair` (one side will be replaced by a paraphrase of
///     itself) or `single-synthetic` (the positive becomes a paraphrase of the anchor) with
///     weights 0.91 / 0.02 / 0.07. Otherwise one `random-pair` of two distinct chunks.
///   * Sides are swapped with probability 0.5.
///
/// Then a per-year cap: each year keeps at most min(--per-year, the --cap-rank-th smallest
/// yearly count) pairs, sampled at random.
///
/// --no-paraphrase: successive pairs only, spacing i−1 … i+2, no paraphrase flags;
/// single-chunk documents are skipped (and counted).
///
/// Deviations from the reference scripts: the paraphrase placeholder is a null side plus the
/// `paraphrase_side` column, not a literal word in the text; the random-pair branch draws two
/// distinct chunks (the reference could pair a chunk with itself); all randomness is seeded
/// per document, so output is identical for a seed whatever the thread count.
///
/// Inputs: a (doc_id, chunk_idx) that appears twice stops the run (exit 2) naming the file and
/// both rows; an empty or whitespace-only text is an error in Parquet and a reported, skipped
/// line in a chunk-file layout; a UTF-8 byte-order mark in any text file and dictionary-encoded
/// string columns (pandas `category`) are read as they are meant.
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    #[command(flatten)]
    corpus: CorpusArgs,
    /// Output `pairs` Parquet file.
    #[arg(long, short)]
    out: PathBuf,
    /// Write the summary as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// First year to use (inclusive) [default: earliest present].
    #[arg(long)]
    from_year: Option<i32>,
    /// Last year to use (inclusive) [default: latest present].
    #[arg(long)]
    to_year: Option<i32>,
    /// Never keep more than this many pairs for one year.
    #[arg(long)]
    per_year: Option<usize>,
    /// The cap is the k-th smallest yearly pair count, k = this.
    #[arg(long, default_value_t = 25)]
    cap_rank: usize,
    /// Probability that a multi-chunk document yields adjacent pairs (else one random pair).
    #[arg(long, default_value_t = 0.98)]
    p_adjacent: f64,
    /// Documents with more chunks than this always yield adjacent pairs.
    #[arg(long, default_value_t = 20)]
    always_adjacent_above: usize,
    /// A document of n chunks yields up to ceil(n / this) adjacent pairs.
    #[arg(long, default_value_t = 8.0)]
    chunks_per_pair: f64,
    /// Weight of the `successive` category.
    #[arg(long, default_value_t = 0.91)]
    w_successive: f64,
    /// Weight of the `synthetic-pair` category.
    #[arg(long, default_value_t = 0.02)]
    w_synthetic_pair: f64,
    /// Weight of the `single-synthetic` category.
    #[arg(long, default_value_t = 0.07)]
    w_single_synthetic: f64,
    /// Probability of swapping anchor and positive.
    #[arg(long, default_value_t = 0.5)]
    p_swap: f64,
    /// Starts this far before a chosen start become unavailable [default: 2; 1 with --no-paraphrase].
    #[arg(long)]
    spacing_before: Option<usize>,
    /// Starts this far after a chosen start become unavailable [default: 3; 2 with --no-paraphrase].
    #[arg(long)]
    spacing_after: Option<usize>,
    /// Successive pairs only, no paraphrase flags (see above).
    #[arg(long)]
    no_paraphrase: bool,
    /// The document split: hold out --held-out-fraction of the documents (drawn by --seed), take
    /// no pair from them, and write their ids here, one per line, for tune-embeddings'
    /// --held-out-docs (evaluation on documents the model never saw). The reference workflow
    /// holds out pairs, not documents.
    #[arg(long)]
    held_out_docs: Option<PathBuf>,
    /// Fraction of the documents held out with --held-out-docs.
    #[arg(long, default_value_t = 0.2, requires = "held_out_docs")]
    held_out_fraction: f64,
}

fn main() -> ExitCode {
    common::progress::init_logging();
    let args = Args::parse();
    let corpus = args.corpus.corpus();
    let base = if args.no_paraphrase {
        Params::no_paraphrase()
    } else {
        Params::default()
    };
    let params = Params {
        p_adjacent: args.p_adjacent,
        always_adjacent_above: args.always_adjacent_above,
        chunks_per_pair: args.chunks_per_pair,
        weights: [
            args.w_successive,
            args.w_synthetic_pair,
            args.w_single_synthetic,
        ],
        p_swap: args.p_swap,
        spacing_before: args.spacing_before.unwrap_or(base.spacing_before),
        spacing_after: args.spacing_after.unwrap_or(base.spacing_after),
        no_paraphrase: args.no_paraphrase,
    };
    let opts = Options {
        corpus,
        out: args.out,
        seed: args.seed,
        from_year: args.from_year,
        to_year: args.to_year,
        per_year: args.per_year,
        cap_rank: args.cap_rank,
        params,
        held_out: args.held_out_docs.map(|list| select_pairs::HeldOut {
            list,
            fraction: args.held_out_fraction,
        }),
    };
    let report = match run(&opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(if e.is_bad_input() { 2 } else { 1 });
        }
    };
    print_summary(&report);
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report).expect("report serializes");
        if let Err(e) = common::atomic::write_atomic(path, &json) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn print_summary(r: &select_pairs::Report) {
    let held_out = if r.held_out_documents > 0 {
        format!(" ({} more documents held out)", r.held_out_documents)
    } else {
        String::new()
    };
    eprintln!(
        "selected {} pairs from the {} chunks of {} documents{held_out} → {}",
        r.pairs,
        r.chunks,
        r.documents - r.held_out_documents,
        r.output.display()
    );
    let cats: Vec<String> = r
        .per_category
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    eprintln!("  by category: {}", cats.join(", "));
    if r.held_out_documents > 0 {
        eprintln!(
            "  {} documents held out for evaluation (no pair from them)",
            r.held_out_documents
        );
    }
    let capped = r
        .per_year
        .values()
        .filter(|y| y.after_cap < y.before_cap)
        .count();
    eprintln!(
        "  per-year cap {}: {} of {} years capped",
        r.cap,
        capped,
        r.per_year.len()
    );
    for (reason, n) in &r.skipped_documents {
        eprintln!("  skipped {n} documents: {reason}");
    }
    for p in r.import_problems.iter().take(20) {
        eprintln!("  import: {p}");
    }
    if r.import_problems.len() > 20 {
        eprintln!(
            "  import: … {} more (see --report)",
            r.import_problems.len() - 20
        );
    }
}
