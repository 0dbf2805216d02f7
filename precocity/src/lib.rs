//! Precocity, novelty and transience of every chunk and document of an embedded corpus: how much
//! a text resembles the future more than the past (Griebel et al., "Locating the Leading Edge of
//! Cultural Change", CHR 2024; novelty and transience after Barron et al. 2018), as the
//! reference workflow computes it (Historical-AI-Lab/novelty,
//! `tunedembeddings/calc_precocity_worker_for_embeddings.py`), at matrix speed.
//!
//! Work is split by centre year. Each centre year's chunk measures are committed as
//! `OUT/years/<Y>.parquet`; when every planned year is there, the task that notices (under a
//! lock) writes `chunks.parquet`, `documents.parquet`, `documents.tsv` and the manifest. A
//! killed run resumes from its committed years; the output does not depend on the thread count
//! or on how the years were split between array tasks.

pub mod corpus;
pub mod engine;
pub mod exclusions;
pub mod output;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::provenance::{sha256_file, Provenance};
use common::{Error, Result};
use serde::Serialize;

pub use corpus::{Corpus, Input};
pub use exclusions::{TrainDocs, UnknownIds};
use output::{ChunkMeasure, DocMeasure};

/// How two chunks are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// −artanh(cos(p, c)) on L2-normalised vectors (the reference's embeddings measure).
    Cosine,
    /// KL(p‖c) on probability vectors (the reference's topic-model measure).
    Kld,
}

/// The exclusion filters, nested: each drops everything the previous one drops, and more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Filter {
    NoFilter,
    /// Chunks of documents used in training.
    Train,
    /// … and of documents sharing an author with the centre document.
    TrainAuth,
    /// … and chunks that quote the centre document.
    TrainAuthQuote,
}

impl Filter {
    pub const ALL: [Filter; 4] = [
        Filter::NoFilter,
        Filter::Train,
        Filter::TrainAuth,
        Filter::TrainAuthQuote,
    ];

    /// The name in the `filtered` column (the reference's).
    pub fn as_str(self) -> &'static str {
        match self {
            Filter::NoFilter => "no filter",
            Filter::Train => "train",
            Filter::TrainAuth => "trainauth",
            Filter::TrainAuthQuote => "trainauthquote",
        }
    }
}

impl std::str::FromStr for Filter {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "no filter" | "nofilter" | "no-filter" | "none" => Ok(Filter::NoFilter),
            other => Filter::ALL
                .into_iter()
                .find(|f| f.as_str() == other)
                .ok_or_else(|| {
                    format!("unknown filter {s:?}: use none, train, trainauth, trainauthquote")
                }),
        }
    }
}

/// The grid of measures computed for every chunk and document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grid {
    /// Time radii r (years): novelty over −r…−1, transience over 1…r.
    pub radii: Vec<u32>,
    /// Fractions f of the comparison chunks (the ⌈f·N⌉ closest) each year mean is over.
    pub fractions: Vec<f64>,
    /// Fractions a of a document's chunks (the ⌈a·n⌉ most precocious) its measures are over.
    pub aggregates: Vec<f64>,
    /// Filters, in increasing order.
    pub filters: Vec<Filter>,
}

impl Default for Grid {
    /// The reference's grid.
    fn default() -> Self {
        Grid {
            radii: vec![10, 20],
            fractions: vec![1.0, 0.1, 0.05],
            aggregates: vec![1.0, 0.25],
            filters: Filter::ALL.to_vec(),
        }
    }
}

impl Grid {
    pub fn max_radius(&self) -> u32 {
        self.radii.iter().copied().max().unwrap_or(0)
    }

    fn check(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Invalid(format!("bad grid: {what}")));
        if self.radii.is_empty() || self.radii.contains(&0) {
            return bad("time radii must be ≥ 1 and at least one given");
        }
        let frac_ok = |v: &[f64]| !v.is_empty() && v.iter().all(|&x| x > 0.0 && x <= 1.0);
        if !frac_ok(&self.fractions) || !frac_ok(&self.aggregates) {
            return bad("fractions and aggregates must be in (0, 1] and at least one given");
        }
        if self.filters.is_empty() || self.filters.windows(2).any(|w| w[0] >= w[1]) {
            return bad("filters must be given once each, in nesting order");
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub input: Input,
    pub out_dir: PathBuf,
    pub train: Option<TrainDocs>,
    pub authors: Option<PathBuf>,
    pub quotes: Option<PathBuf>,
    /// Centre years (inclusive); the comparison window reaches beyond them.
    pub from_year: Option<i32>,
    pub to_year: Option<i32>,
    pub grid: Grid,
    pub distance: Distance,
    /// (task, tasks): compute only this array task's share of the centre years.
    pub task: Option<(usize, usize)>,
}

/// A document's headline measure, for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct TopDocument {
    pub docid: String,
    pub year: i32,
    pub precocity: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Centre years of the whole plan.
    pub years_planned: usize,
    /// Centre years this run computed, and those it found committed.
    pub years_computed: Vec<i32>,
    pub years_resumed: Vec<i32>,
    /// Whether the final tables were written (every planned year committed).
    pub finished: bool,
    pub documents: u64,
    pub chunks: u64,
    /// Centre × comparison chunk pairs this run compared.
    pub pairs: u64,
    pub seconds: f64,
    pub dim: Option<usize>,
    /// Vectors that were not unit length (unit sum for KL) and were normalised.
    pub renormalised: u64,
    pub unknown_ids: UnknownIds,
    /// Reference layout: chunk rows whose paperId is not in the metadata.
    pub rows_without_metadata: u64,
    /// What `top` ranks by: (fraction, filter, radius, chunks used).
    pub top_by: (f64, &'static str, u32, f64),
    /// The 10 most precocious documents (when finished).
    pub top: Vec<TopDocument>,
}

/// The centre years: corpus years within `from..=to`.
pub fn plan_years(corpus: &Corpus, from: Option<i32>, to: Option<i32>) -> Vec<i32> {
    corpus
        .years()
        .into_iter()
        .filter(|&y| from.is_none_or(|f| y >= f) && to.is_none_or(|t| y <= t))
        .collect()
}

/// Array task `task` of `tasks` takes a contiguous run of centre years (so its window of loaded
/// years stays small), cut so each task gets about the same number of chunk comparisons.
pub fn task_years(
    corpus: &Corpus,
    years: &[i32],
    radius: u32,
    task: usize,
    tasks: usize,
) -> Vec<i32> {
    let r = radius as i32;
    let work: Vec<f64> = years
        .iter()
        .map(|&y| {
            let window: usize = corpus
                .year_chunks
                .range(y - r..=y + r)
                .filter(|(&c, _)| c != y)
                .map(|(_, n)| n)
                .sum();
            corpus.year_chunks[&y] as f64 * window.max(1) as f64
        })
        .collect();
    let total: f64 = work.iter().sum();
    let mut before = 0.0;
    let mut mine = Vec::new();
    for (&y, w) in years.iter().zip(&work) {
        // The task whose share holds the midpoint of this year's work.
        let mid = (before + w / 2.0) / total.max(f64::MIN_POSITIVE);
        if ((mid * tasks as f64) as usize).min(tasks - 1) == task {
            mine.push(y);
        }
        before += w;
    }
    mine
}

pub fn part_path(out_dir: &Path, year: i32) -> PathBuf {
    out_dir.join("years").join(format!("{year}.parquet"))
}

pub const CHUNKS_FILE: &str = "chunks.parquet";
pub const DOCUMENTS_FILE: &str = "documents.parquet";
pub const DOCUMENTS_TSV: &str = "documents.tsv";

pub fn run(opts: &Options) -> Result<Report> {
    opts.grid.check()?;
    let start = Instant::now();
    let corpus = Corpus::open(&opts.input, opts.distance)?;
    let exclusions = exclusions::Exclusions::load(
        &corpus,
        opts.train.as_ref(),
        opts.authors.as_deref(),
        opts.quotes.as_deref(),
    )?;
    if exclusions.unknown.total() > 0 {
        tracing::warn!(
            "exclusion inputs name ids the corpus does not have (ignored): {:?}",
            exclusions.unknown
        );
    }
    let years = plan_years(&corpus, opts.from_year, opts.to_year);
    if years.is_empty() {
        return Err(Error::Invalid(
            "no corpus year lies within --from-year/--to-year".into(),
        ));
    }
    let mine = match opts.task {
        Some((task, tasks)) if task >= tasks => {
            return Err(Error::Invalid(format!(
                "array task {task} of {tasks} does not exist"
            )))
        }
        Some((task, tasks)) => task_years(&corpus, &years, opts.grid.max_radius(), task, tasks),
        None => years.clone(),
    };
    let provenance = provenance(opts, &corpus)?;
    std::fs::create_dir_all(opts.out_dir.join("years")).map_err(|e| Error::io(&opts.out_dir, e))?;

    let mut report = Report {
        years_planned: years.len(),
        years_computed: Vec::new(),
        years_resumed: Vec::new(),
        finished: false,
        documents: 0,
        chunks: 0,
        pairs: 0,
        seconds: 0.0,
        dim: None,
        renormalised: 0,
        unknown_ids: exclusions.unknown.clone(),
        rows_without_metadata: corpus.rows_without_metadata,
        top_by: top_key(&opts.grid),
        top: Vec::new(),
    };
    compute_years(opts, &corpus, &exclusions, &mine, &provenance, &mut report)?;
    finish(opts, &years, &provenance, &mut report)?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Computes and commits every year of `mine` that is not committed yet, sliding the window of
/// loaded years forward.
fn compute_years(
    opts: &Options,
    corpus: &Corpus,
    exclusions: &exclusions::Exclusions,
    mine: &[i32],
    provenance: &Provenance,
    report: &mut Report,
) -> Result<()> {
    let mut todo = Vec::new();
    for &y in mine {
        let path = part_path(&opts.out_dir, y);
        if path.exists() {
            check_same_job(&path, provenance)?;
            report.years_resumed.push(y);
        } else {
            todo.push(y);
        }
    }
    if !report.years_resumed.is_empty() {
        tracing::info!(
            "{} centre years already committed, {} to compute",
            report.years_resumed.len(),
            todo.len()
        );
    }
    let total_chunks: usize = todo.iter().map(|y| corpus.year_chunks[y]).sum();
    let bar = common::progress::bar(total_chunks as u64, "chunks");
    let r = opts.grid.max_radius() as i32;
    let mut window = corpus::Window::default();
    let mut loader = corpus::Loader::default();
    for &year in &todo {
        bar.set_message(format!("year {year}"));
        window.slide(corpus, year - r, year + r, year + 2 * r, &mut loader)?;
        let measures = engine::centre_year(&window, year, exclusions, &opts.grid, opts.distance);
        let block = window.get(year).expect("loaded");
        let per_chunk = opts.grid.fractions.len() * opts.grid.filters.len() * opts.grid.radii.len();
        let mut rows: Vec<ChunkMeasure> = Vec::with_capacity(block.rows() * per_chunk);
        for (row, m) in measures.values.chunks(per_chunk).enumerate() {
            let doc = block.doc_id(block.doc_of_row(row));
            output::chunk_rows(doc, block.chunk_idx[row], year, &opts.grid, m, &mut rows);
        }
        let mut writer = output::ChunkWriter::create(&part_path(&opts.out_dir, year), provenance)?;
        writer.write(&rows)?;
        writer.finish()?;
        report.pairs += measures.pairs;
        report.years_computed.push(year);
        bar.inc(block.rows() as u64);
    }
    bar.finish_and_clear();
    report.dim = loader.dim.map(|(d, _)| d);
    report.renormalised = loader.renormalised;
    if loader.renormalised > 0 {
        let unit = if opts.distance == Distance::Kld {
            "unit sum"
        } else {
            "unit length"
        };
        tracing::warn!(
            "{} vectors were not of {unit} and were normalised",
            loader.renormalised
        );
    }
    Ok(())
}

/// When every planned year is committed, writes the final tables (under a lock, so array tasks
/// finishing together write them once at a time; the bytes are the same either way).
fn finish(
    opts: &Options,
    years: &[i32],
    provenance: &Provenance,
    report: &mut Report,
) -> Result<()> {
    let lock = common::atomic::lock_file(&opts.out_dir.join(".precocity.lock"))?;
    let missing = years
        .iter()
        .filter(|&&y| !part_path(&opts.out_dir, y).exists())
        .count();
    if missing > 0 {
        tracing::info!("{missing} centre years not committed yet (other array tasks); final tables not written");
        return Ok(());
    }
    let chunks_path = opts.out_dir.join(CHUNKS_FILE);
    let docs_path = opts.out_dir.join(DOCUMENTS_FILE);
    let tsv_path = opts.out_dir.join(DOCUMENTS_TSV);
    let mut chunks = output::ChunkWriter::create(&chunks_path, provenance)?;
    let mut docs = output::DocWriter::create(&docs_path, &tsv_path, provenance)?;
    let key = top_key(&opts.grid);
    let mut top: Vec<TopDocument> = Vec::new();
    for &y in years {
        let part = part_path(&opts.out_dir, y);
        check_same_job(&part, provenance)?;
        let rows = output::read_chunks(&part)?;
        chunks.write(&rows)?;
        let doc_rows: Vec<DocMeasure> = output::aggregate(&rows, &opts.grid);
        docs.write(&doc_rows)?;
        for d in &doc_rows {
            if (
                d.fraction,
                d.filter.as_str(),
                d.radius as u32,
                d.chunks_used,
            ) == key
            {
                report.documents += 1;
                if let Some(p) = d.precocity {
                    top.push(TopDocument {
                        docid: d.docid.clone(),
                        year: d.date,
                        precocity: p,
                    });
                }
            }
        }
        top.sort_by(|a, b| {
            b.precocity
                .total_cmp(&a.precocity)
                .then_with(|| a.docid.cmp(&b.docid))
        });
        top.truncate(10);
    }
    let chunk_rows = chunks.finish()?;
    report.chunks = chunk_rows
        / (opts.grid.fractions.len() * opts.grid.filters.len() * opts.grid.radii.len()) as u64;
    let doc_rows = docs.finish()?;
    common::manifest::record(&opts.out_dir, &chunks_path, Some(chunk_rows), provenance)?;
    common::manifest::record(&opts.out_dir, &docs_path, Some(doc_rows), provenance)?;
    common::manifest::record(&opts.out_dir, &tsv_path, None, provenance)?;
    report.top = top;
    report.finished = true;
    drop(lock);
    Ok(())
}

/// The summary's ranking: the grid's first fraction, strictest filter, largest radius, first
/// aggregate (the reference's defaults: 1.0, trainauthquote, 20, 1.0). Recorded as `top_by`
/// in the manifest's parameters; the report ranks its top documents by it.
fn top_key(grid: &Grid) -> (f64, &'static str, u32, f64) {
    (
        grid.fractions[0],
        grid.filters.last().expect("checked").as_str(),
        grid.max_radius(),
        grid.aggregates[0],
    )
}

/// Stage, version, grid and the sha256 of every input file: what a committed year must match
/// to be reused.
fn provenance(opts: &Options, corpus: &Corpus) -> Result<Provenance> {
    let top = top_key(&opts.grid);
    let parameters = serde_json::json!({
        "distance": opts.distance,
        "radii": opts.grid.radii,
        "fractions": opts.grid.fractions,
        "aggregates": opts.grid.aggregates,
        "filters": opts.grid.filters.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        "from_year": opts.from_year,
        "to_year": opts.to_year,
        "train": opts.train.as_ref().map(|t| match t {
            TrainDocs::Pairs(p) => format!("pairs:{}", p.display()),
            TrainDocs::List(p) => format!("list:{}", p.display()),
        }),
        "authors": opts.authors.as_ref().map(|p| p.display().to_string()),
        "quotes": opts.quotes.as_ref().map(|p| p.display().to_string()),
        // The setting the stage ranks its top documents by, so the report ranks by the same.
        "top_by": {
            "fraction_compared": top.0,
            "filtered": top.1,
            "time_radius": top.2,
            "chunks_used": top.3,
        },
    });
    let mut p = Provenance::new("precocity", env!("CARGO_PKG_VERSION"), parameters);
    let mut inputs: Vec<&Path> = corpus.files.iter().map(PathBuf::as_path).collect();
    if let Input::Reference { metadata, .. } = &opts.input {
        inputs.push(metadata);
    }
    if let Some(TrainDocs::Pairs(f) | TrainDocs::List(f)) = &opts.train {
        inputs.push(f);
    }
    inputs.extend(opts.authors.as_deref());
    inputs.extend(opts.quotes.as_deref());
    let hashes: BTreeMap<String, String> = inputs
        .iter()
        .map(|f| Ok((f.display().to_string(), sha256_file(f)?)))
        .collect::<Result<_>>()?;
    for (path, sha) in hashes {
        p = p.with_input_hash(path, sha);
    }
    Ok(p)
}

/// A committed year must come from the same inputs and grid; anything else is an error rather
/// than a silent mix.
fn check_same_job(file: &Path, expected: &Provenance) -> Result<()> {
    let (_, found) = common::parquet_io::footer_info(file)?;
    match found {
        Some(found)
            if found.stage == expected.stage
                && found.parameters == expected.parameters
                && found.inputs == expected.inputs =>
        {
            Ok(())
        }
        Some(_) => Err(Error::Invalid(format!(
            "{}: was computed from other inputs or settings; remove {} or use another --out",
            file.display(),
            file.parent().unwrap_or(Path::new(".")).display()
        ))),
        None => Err(Error::Invalid(format!(
            "{}: exists but was not written by precocity; move it away",
            file.display()
        ))),
    }
}

/// The centre years `run` would compute (this array task's share when `opts.task` is set).
pub fn list_years(opts: &Options) -> Result<Vec<i32>> {
    let corpus = Corpus::open(&opts.input, opts.distance)?;
    let years = plan_years(&corpus, opts.from_year, opts.to_year);
    Ok(match opts.task {
        Some((task, tasks)) => task_years(&corpus, &years, opts.grid.max_radius(), task, tasks),
        None => years,
    })
}
