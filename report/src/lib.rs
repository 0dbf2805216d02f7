//! The `report` stage: one self-contained HTML page per run folder, which a researcher opens
//! instead of writing a notebook.
//!
//! [`run`] reads whatever the stages have produced in a run folder (pairs, the tuned model with
//! its metrics log, embeddings, precocity) plus, when given, the corpus and the base model, and
//! writes into `--out`:
//!
//! ```text
//! index.html          the page: every figure inline as SVG, no script, no external resource
//! <figure>.svg        the same figures as standalone files
//! map-base.parquet    2-D PCA coordinates of the seeded chunk sample (doc_id, chunk_idx, year,
//! map-tuned.parquet   x, y), for tools such as embedding-atlas
//! MANIFEST.json       every file above, with the report's provenance
//! ```
//!
//! A section whose inputs are missing is replaced by a note saying what is missing. The same
//! inputs give byte-identical outputs (no timestamps; seeded samples; deterministic PCA). Memory
//! is bounded by the sample sizes: every table is streamed, and what the page shows is
//! aggregated (per decade, per bin) or sampled (the map, the token lengths).

pub mod corpus;
pub mod figures;
pub mod html;
pub mod inputs;
pub mod map;
pub mod pairs;
pub mod precocity;
pub mod training;

use std::path::{Path, PathBuf};

pub use html::Section;
pub use inputs::RunInputs;

/// The stage name in provenance and manifests.
pub const STAGE: &str = "report";

/// What [`run`] needs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Options {
    /// The run folder (pairs/, pairs-filled/, model/, embeddings/, precocity/, each optional).
    pub run_dir: PathBuf,
    /// Output folder (replaced whole on success).
    pub out: PathBuf,
    /// The base model (sentence-transformers folder): token lengths and the base-model map.
    pub base_model: Option<PathBuf>,
    /// The corpus (`chunks` Parquet, or a chunk-file layout folder): per-year counts, token
    /// lengths, texts.
    pub corpus: Option<PathBuf>,
    /// Chunks in the embedding map's seeded sample.
    pub map_sample: usize,
    /// At most about this many chunks are tokenized for the length distribution.
    pub length_sample: usize,
    /// Seed of both samples.
    pub seed: u64,
}

impl Options {
    /// Defaults for everything but the folders.
    pub fn new(run_dir: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Options {
            run_dir: run_dir.into(),
            out: out.into(),
            base_model: None,
            corpus: None,
            map_sample: 2000,
            length_sample: 20_000,
            seed: 42,
        }
    }
}

/// What [`run`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// `OUT/index.html`.
    pub index: PathBuf,
    /// Section id → shown (true) or replaced by a note (false, with the note).
    pub sections: Vec<(String, Option<String>)>,
    /// Every file written into OUT, relative names.
    pub files: Vec<String>,
    /// Size of index.html in bytes.
    pub page_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Common(#[from] common::Error),
    /// Loading or running the base model.
    #[error(transparent)]
    Encoder(#[from] encoder::Error),
    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },
    #[error("drawing figure {figure}: {reason}")]
    Figure { figure: String, reason: String },
    #[error("PCA: {0}")]
    Pca(String),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Bad input (exit code 2) rather than a failure of this program or machine.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Common(e) => e.is_bad_input(),
            Error::Encoder(e) => e.is_bad_input(),
            Error::Input { .. } | Error::Invalid(_) => true,
            Error::Figure { .. } | Error::Pca(_) => false,
        }
    }

    pub(crate) fn input(path: &Path, reason: impl Into<String>) -> Self {
        Error::Input {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Builds the page for `opts.run_dir` and writes it with its figures into `opts.out`.
pub fn run(opts: &Options) -> Result<Report> {
    if opts.map_sample < 3 {
        return Err(Error::Invalid("--map-sample must be at least 3".into()));
    }
    let inputs = RunInputs::discover(opts)?;
    let precocity = inputs.precocity.as_ref().map(precocity::load).transpose()?;
    let wanted = precocity
        .as_ref()
        .map(|p| p.top_chunks())
        .unwrap_or_default();
    let scan = inputs
        .corpus
        .as_ref()
        .map(|c| corpus::scan(c, inputs.base_model.as_deref(), &wanted, opts))
        .transpose()?;

    let sections = vec![
        corpus::section(scan.as_ref(), &inputs)?,
        pairs::section(&inputs)?,
        training::section(&inputs)?,
        map::section(&inputs, scan.as_ref(), opts)?,
        training::time_section(&inputs)?,
        precocity::section(precocity.as_ref(), scan.as_ref(), &inputs)?,
    ];
    let page = html::page(&inputs, &sections);
    html::write_outputs(opts, &inputs, &page, &sections)
}
