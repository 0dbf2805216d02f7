use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use precocity::{run, Distance, Filter, Grid, Input, Options, TrainDocs};

/// Novelty, transience and precocity of every chunk and document of an embedded corpus.
///
/// Precocity (Griebel et al. 2024, "Locating the Leading Edge of Cultural Change") is how much
/// a text resembles the future more than the past. For each centre year Y, each chunk p of a
/// document of year Y, and each comparison year Y+d (d = ±1 … ±R; same-year documents are
/// never compared): the distance to every kept chunk c of that year is −artanh(cos(p, c)) (or
/// KL(p‖c) with --distance kld), and the year mean is the mean of the ⌈f·N⌉ smallest of the
/// N distances. Novelty over radius r is the mean of the year means for d = −r … −1,
/// transience for d = 1 … r, and precocity = novelty − transience. A document's measures
/// are the means over its ⌈a·n⌉ most precocious chunks. As in Historical-AI-Lab/novelty
/// (calc_precocity_for_embeddings.py), whose column names the document table keeps, except
/// where noted below.
///
/// Filters (nested; each drops what the previous drops, and more): `no filter`; `train` drops
/// chunks of documents used in training (--pairs or --train-docs); `trainauth` also those of
/// documents sharing an author with the centre document (--authors); `trainauthquote` also
/// chunks that quote it (--quotes). Unlike the reference, the nesting holds for every document:
/// the reference gives a document with no line in the author/quote files empty
/// trainauth/trainauthquote sets, so training documents come back in for it.
///
/// Where the reference is undefined, this stage:
///  - leaves a comparison year with no (kept) chunks out of the novelty/transience mean (the
///    reference crashes on the empty mean); a side with no comparison year at all (the corpus's
///    first or last years) gives null novelty or transience, and null precocity (`nan` in the TSV);
///    chunks cannot be ranked without precocity, so such a document's row is null in all three
///    measures (chunks.parquet keeps the defined one);
///  - clamps cos to ±(1 − 2⁻²⁰), so an identical chunk is at distance −7.28, the closest
///    possible (the reference silently uses 0, as if orthogonal);
///  - uses every chunk of a document whatever its numbering (the reference stops at the first
///    gap in chunk numbers);
///  - takes years as they come: a missing year inside the window is simply a year without
///    comparison chunks.
///
/// Vectors: non-finite values and zero vectors are errors naming file and row; vectors that are
/// not unit length are normalised (as the reference does) and counted in a warning. With
/// --distance kld, vectors are normalised to sum 1 (as scipy.stats.entropy does) and must be
/// strictly positive (KL is infinite otherwise; topic models' distributions are smoothed).
/// Ids in the exclusion files that the corpus lacks are counted, reported and ignored.
///
/// Outputs in OUT: documents.tsv and documents.parquet (docid, date, num_chunks,
/// fraction_compared, filtered, time_radius, chunks_used, precocity, novelty, transience; one
/// row per document × fraction × filter × radius × aggregate, in that nesting, documents by
/// year then id), chunks.parquet (doc_id, chunk_idx, year, fraction_compared, filtered,
/// time_radius, precocity, novelty, transience), MANIFEST.json, and years/<Y>.parquet: each
/// centre year's chunk rows, committed as it finishes. A rerun skips committed years (after
/// checking they come from the same inputs and settings). Under a Slurm job array
/// (SLURM_ARRAY_TASK_ID, _COUNT, _MIN) each task computes a contiguous share of the centre
/// years (about equal comparisons each); the task that finds every year committed writes the
/// final tables. Output bytes do not depend on the thread count (RAYON_NUM_THREADS) or split.
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// apply-model's embeddings: a folder of shards (`*.parquet`; exports, `.ids.parquet` and
    /// `.parts/` folders are ignored) or one file. Years come from the file's `year` column.
    #[arg(
        long,
        required_unless_present = "reference_dir",
        conflicts_with = "reference_dir"
    )]
    embeddings: Option<PathBuf>,
    /// The reference layout instead: a folder of `{decade}.tsv` (paperId, chunknumber,
    /// embedding_1 … embedding_D) …
    #[arg(long, requires = "metadata")]
    reference_dir: Option<PathBuf>,
    /// … and the metadata TSV giving each paperId's year (columns `paperId`, `year`).
    #[arg(long, requires = "reference_dir")]
    metadata: Option<PathBuf>,
    /// Output folder (not needed with --list-years).
    #[arg(long, short, required_unless_present = "list_years")]
    out: Option<PathBuf>,
    /// Training documents for the `train` filter: every doc_id of this pairs table
    /// (select-pairs' output) …
    #[arg(long, conflicts_with = "train_docs")]
    pairs: Option<PathBuf>,
    /// … or this file, one document id per line. Without either, `train` drops nothing (the
    /// reference's embeddings run also has an empty training set).
    #[arg(long)]
    train_docs: Option<PathBuf>,
    /// Author overlaps: lines `centre<TAB>other paperId` (the reference's article exclusions).
    #[arg(long)]
    authors: Option<PathBuf>,
    /// Quoting chunks: lines `centre<TAB>chunkId<TAB>chunkId…`, chunk ids `paperId-chunknumber`
    /// (the reference's chunk exclusions).
    #[arg(long)]
    quotes: Option<PathBuf>,
    /// First centre year (inclusive); default: the corpus's first. Comparison years reach
    /// beyond it.
    #[arg(long)]
    from_year: Option<i32>,
    /// Last centre year (inclusive; the reference's --enddate is exclusive); default: the
    /// corpus's last.
    #[arg(long)]
    to_year: Option<i32>,
    /// Time radii r (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10,20")]
    radii: Vec<u32>,
    /// Fractions f of the comparison chunks: each year mean is over the ⌈f·N⌉ closest.
    #[arg(long, value_delimiter = ',', default_value = "1.0,0.1,0.05")]
    fractions: Vec<f64>,
    /// Fractions a of a document's chunks: its measures are over the ⌈a·n⌉ most precocious.
    #[arg(long, value_delimiter = ',', default_value = "1.0,0.25")]
    aggregates: Vec<f64>,
    /// Filters, in nesting order: none (written `no filter`), train, trainauth, trainauthquote.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "none,train,trainauth,trainauthquote"
    )]
    filters: Vec<Filter>,
    /// cosine: −artanh(cos) on L2-normalised embeddings; kld: KL(p‖c) on probability vectors
    /// (a topic-model baseline through the same engine).
    #[arg(long, value_enum, default_value = "cosine")]
    distance: Distance,
    /// Compute only this array task's share (0-based after subtracting --task-min) …
    #[arg(long, env = "SLURM_ARRAY_TASK_ID", requires = "tasks")]
    task: Option<usize>,
    /// … of this many tasks.
    #[arg(long, env = "SLURM_ARRAY_TASK_COUNT", requires = "task")]
    tasks: Option<usize>,
    /// The first task id of the array (`--array=1-8` starts at 1).
    #[arg(long, env = "SLURM_ARRAY_TASK_MIN", default_value_t = 0)]
    task_min: usize,
    /// Print the centre years (one per line; with --task/--tasks, that task's) and exit.
    #[arg(long)]
    list_years: bool,
}

fn main() -> ExitCode {
    common::progress::init_logging();
    let args = Args::parse();
    let input = match (args.embeddings, args.reference_dir, args.metadata) {
        (Some(p), _, _) => Input::Embeddings(p),
        (None, Some(dir), Some(metadata)) => Input::Reference { dir, metadata },
        _ => unreachable!("clap requires one input"),
    };
    let task = match args.task.zip(args.tasks) {
        Some((id, n)) if id < args.task_min || id - args.task_min >= n => {
            eprintln!(
                "error: array task {id} is outside {}..{}",
                args.task_min,
                args.task_min + n
            );
            return ExitCode::from(2);
        }
        other => other.map(|(id, n)| (id - args.task_min, n)),
    };
    let opts = Options {
        input,
        out_dir: args.out.unwrap_or_default(),
        train: args
            .pairs
            .map(TrainDocs::Pairs)
            .or(args.train_docs.map(TrainDocs::List)),
        authors: args.authors,
        quotes: args.quotes,
        from_year: args.from_year,
        to_year: args.to_year,
        grid: Grid {
            radii: args.radii,
            fractions: args.fractions,
            aggregates: args.aggregates,
            filters: args.filters,
        },
        distance: args.distance,
        task,
    };
    let result = if args.list_years {
        precocity::list_years(&opts).map(|years| years.iter().for_each(|y| println!("{y}")))
    } else {
        run(&opts).map(|r| {
            eprintln!(
                "precocity: {} centre years ({} computed now, {} already committed), {:.3e} chunk pairs compared in {:.1} s",
                r.years_planned,
                r.years_computed.len(),
                r.years_resumed.len(),
                r.pairs as f64,
                r.seconds
            );
            if !r.finished {
                eprintln!("other centre years are still to be computed; the final tables are written by the task that completes them");
                return;
            }
            let (f, filter, radius, a) = r.top_by;
            println!(
                "{} documents, {} chunks → {} (top 10 by precocity: fraction_compared {f:?}, {filter}, time_radius {radius}, chunks_used {a:?})",
                r.documents,
                r.chunks,
                opts.out_dir.display()
            );
            if r.top.is_empty() && r.documents > 0 {
                tracing::warn!(
                    "no document has a defined precocity under this setting: its filter left \
                     no comparison chunks (e.g. every document is a training document — hold \
                     some out with select-pairs --held-out-docs); the other settings' rows are \
                     in the tables"
                );
            }
            println!("{:<40} {:>6} {:>12}", "docid", "year", "precocity");
            for d in &r.top {
                println!("{:<40} {:>6} {:>12.6}", d.docid, d.year, d.precocity);
            }
        })
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_bad_input() { 2 } else { 1 })
        }
    }
}
