//! select-pairs: training pairs from a chunked corpus, seeded and year-balanced.
//!
//! Per document (chunks in chunk order) [`select::choose`] picks pairs: adjacent passages
//! that never touch, some flagged for an LLM paraphrase, or rarely one random pair. Pairs are
//! then capped per year so that no period dominates ([`cap`]). Every random draw comes from
//! an RNG seeded by `--seed` and the document id (or the year), so the output does not depend
//! on thread count or on the order documents are processed in.

pub mod cap;
pub mod select;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use common::corpus::Corpus;
use common::provenance::Provenance;
use common::schema::{Category, Side};
use common::tables::{write_pairs, ChunkRow, PairRow};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

pub use select::Params;

#[derive(Debug, Clone)]
pub struct Options {
    pub corpus: Corpus,
    pub out: PathBuf,
    pub seed: u64,
    /// Inclusive year range; `None` = all years present.
    pub from_year: Option<i32>,
    pub to_year: Option<i32>,
    /// Upper bound of the per-year cap.
    pub per_year: Option<usize>,
    /// The cap is the `cap_rank`-th smallest yearly pair count (1-based).
    pub cap_rank: usize,
    pub params: Params,
    /// The document split: hold out documents for evaluation and write their list.
    pub held_out: Option<HeldOut>,
}

/// Documents kept out of the pairs, for evaluation (see [`common::split`]).
#[derive(Debug, Clone, Serialize)]
pub struct HeldOut {
    /// Where the held-out document list goes (one id per line).
    pub list: PathBuf,
    /// Fraction of the documents (in the year range) held out.
    pub fraction: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct YearCount {
    pub before_cap: usize,
    pub after_cap: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub output: PathBuf,
    /// Documents read (held-out ones included).
    pub documents: usize,
    /// Chunks of the documents pairs were selected from (held-out ones excluded).
    pub chunks: usize,
    pub pairs: usize,
    pub cap: usize,
    pub per_category: BTreeMap<String, usize>,
    pub per_year: BTreeMap<i32, YearCount>,
    /// Reason → number of documents that yielded no pair.
    pub skipped_documents: BTreeMap<String, usize>,
    /// Lines and documents the chunk-file layout import skipped (with file:line).
    pub import_problems: Vec<String>,
    /// Documents held out for evaluation (no pair comes from them).
    pub held_out_documents: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Common(#[from] common::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Common(e) => e.is_bad_input(),
            Error::Invalid(_) => true,
        }
    }
}

/// One document's chunks, in chunk order.
struct Document {
    doc_id: String,
    year: i32,
    chunks: Vec<(i32, String)>,
}

pub fn run(opts: &Options) -> Result<Report, Error> {
    opts.params.validate().map_err(Error::Invalid)?;
    if opts.cap_rank == 0 {
        return Err(Error::Invalid("--cap-rank counts from 1".into()));
    }
    let mut report = Report {
        output: opts.out.clone(),
        ..Report::default()
    };
    let mut docs = read_documents(opts, &mut report)?;
    report.documents = docs.len();
    let held_out = match &opts.held_out {
        Some(h) => {
            if !(0.0..1.0).contains(&h.fraction) {
                return Err(Error::Invalid(format!(
                    "--held-out-fraction must be in [0, 1), got {}",
                    h.fraction
                )));
            }
            let ids = docs.iter().map(|d| d.doc_id.as_str());
            let held = common::split::held_out_documents(ids, h.fraction, opts.seed);
            docs.retain(|d| !held.contains(&d.doc_id));
            Some(held)
        }
        None => None,
    };
    report.held_out_documents = held_out.as_ref().map_or(0, |h| h.len());
    report.chunks = docs.iter().map(|d| d.chunks.len()).sum();
    if docs.is_empty() {
        return Err(Error::Invalid(format!(
            "no document in the year range {}–{}",
            opts.from_year.map_or("…".into(), |y| y.to_string()),
            opts.to_year.map_or("…".into(), |y| y.to_string())
        )));
    }

    let chosen: Vec<Result<Vec<PairRow>, select::Skip>> = docs
        .par_iter()
        .map(|doc| {
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(opts.seed, doc.doc_id.as_bytes()));
            let choices = select::choose(doc.chunks.len(), &opts.params, &mut rng)?;
            Ok(choices.into_iter().map(|c| to_row(doc, c)).collect())
        })
        .collect();
    let mut by_year: BTreeMap<i32, Vec<PairRow>> = BTreeMap::new();
    for result in chosen {
        match result {
            Ok(rows) => {
                for row in rows {
                    by_year.entry(row.year).or_default().push(row);
                }
            }
            Err(skip) => {
                let reason = serde_json::to_value(skip).expect("serializes");
                *report
                    .skipped_documents
                    .entry(reason.as_str().unwrap_or("?").to_string())
                    .or_default() += 1;
            }
        }
    }
    let counts: Vec<usize> = by_year.values().map(Vec::len).collect();
    let cap = cap::cap(&counts, opts.per_year, opts.cap_rank);
    report.cap = cap;
    let mut pairs = Vec::new();
    for (year, rows) in by_year {
        let before = rows.len();
        let kept = cap::sample(
            rows,
            cap,
            derive_seed(opts.seed, format!("year {year}").as_bytes()),
        );
        report.per_year.insert(
            year,
            YearCount {
                before_cap: before,
                after_cap: kept.len(),
            },
        );
        pairs.extend(kept);
    }
    if pairs.is_empty() {
        return Err(Error::Invalid(
            "no pair could be selected (every document was skipped)".into(),
        ));
    }
    for p in &pairs {
        *report
            .per_category
            .entry(p.category.as_str().to_string())
            .or_default() += 1;
    }
    report.pairs = pairs.len();

    let params = serde_json::json!({
        "seed": opts.seed,
        "from_year": opts.from_year,
        "to_year": opts.to_year,
        "per_year": opts.per_year,
        "cap_rank": opts.cap_rank,
        "cap": cap,
        "selection": opts.params,
        "held_out": opts.held_out,
    });
    let provenance = opts.corpus.add_to(Provenance::new(
        "select-pairs",
        env!("CARGO_PKG_VERSION"),
        params,
    ))?;
    let rows = write_pairs(&opts.out, &pairs, &provenance)?;
    common::manifest::record_beside(&opts.out, Some(rows), &provenance)?;
    if let (Some(h), Some(docs)) = (&opts.held_out, &held_out) {
        common::split::write_doc_list(&h.list, docs)?;
        common::manifest::record_beside(&h.list, Some(docs.len() as u64), &provenance)?;
    }
    Ok(report)
}

/// Groups the corpus into documents (in order of first appearance), rejecting documents whose
/// year changes between rows (a repeated chunk is the corpus reader's error, as in every stage).
fn read_documents(opts: &Options, report: &mut Report) -> Result<Vec<Document>, Error> {
    let in_range = |year: i32| {
        opts.from_year.is_none_or(|y| year >= y) && opts.to_year.is_none_or(|y| year <= y)
    };
    let source = match &opts.corpus {
        Corpus::Chunks(p) => p.display().to_string(),
        Corpus::ChunkFiles(l) => l.chunks_dir.display().to_string(),
    };
    let mut docs: Vec<Document> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut row_no = 0u64;
    let mut outside = 0usize;
    let files_report =
        opts.corpus
            .for_each_batch(common::parquet_io::BATCH_ROWS, |rows: Vec<ChunkRow>| {
                for row in rows {
                    let this_row = row_no;
                    row_no += 1;
                    if !in_range(row.year) {
                        if !index.contains_key(&row.doc_id) {
                            outside += 1;
                            index.insert(row.doc_id.clone(), usize::MAX);
                        }
                        continue;
                    }
                    let at = *index.entry(row.doc_id.clone()).or_insert_with(|| {
                        docs.push(Document {
                            doc_id: row.doc_id.clone(),
                            year: row.year,
                            chunks: Vec::new(),
                        });
                        docs.len() - 1
                    });
                    let bad = |reason: String| common::Error::BadValue {
                        path: source.clone().into(),
                        row: this_row,
                        column: common::schema::chunks::DOC_ID,
                        reason,
                    };
                    if at == usize::MAX || docs[at].year != row.year {
                        return Err(bad(format!(
                            "document {:?} appears with more than one year",
                            row.doc_id
                        )));
                    }
                    docs[at].chunks.push((row.chunk_idx, row.text));
                }
                Ok(())
            })?;
    if outside > 0 {
        report
            .skipped_documents
            .insert("outside-year-range".into(), outside);
    }
    if let Some(files) = files_report {
        report
            .import_problems
            .extend(files.malformed.iter().map(|p| p.to_string()));
        report.import_problems.extend(
            files
                .missing_chunk_files
                .iter()
                .map(|d| format!("{d}: no chunk file")),
        );
        report.import_problems.extend(
            files
                .empty_documents
                .iter()
                .map(|d| format!("{d}: no usable chunk")),
        );
    }
    for doc in &mut docs {
        doc.chunks.sort_by_key(|c| c.0);
    }
    Ok(docs)
}

fn to_row(doc: &Document, c: select::Choice) -> PairRow {
    let text = |pos: usize| Some(doc.chunks[pos].1.clone());
    let idx = |pos: usize| doc.chunks[pos].0;
    let (lo, hi) = (c.anchor.min(c.positive), c.anchor.max(c.positive));
    let pair_id = if lo == hi {
        format!("{}#{}", doc.doc_id, idx(lo))
    } else {
        format!("{}#{}-{}", doc.doc_id, idx(lo), idx(hi))
    };
    let placeholder =
        |side: Side| c.category == Category::SingleSynthetic && c.paraphrase == Some(side);
    PairRow {
        pair_id,
        doc_id: doc.doc_id.clone(),
        year: doc.year,
        anchor: if placeholder(Side::Anchor) {
            None
        } else {
            text(c.anchor)
        },
        positive: if placeholder(Side::Positive) {
            None
        } else {
            text(c.positive)
        },
        negative: None,
        category: c.category,
        paraphrase_side: c.paraphrase,
        provenance: Default::default(),
    }
}

/// A 64-bit seed from the run's seed and a label (document id, year), stable across
/// platforms and versions (FNV-1a, then a SplitMix64 finaliser).
pub fn derive_seed(seed: u64, label: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.to_le_bytes().iter().chain(label) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}
