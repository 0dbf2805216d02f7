//! The precocity section, from the precocity stage's tables: the distribution of document
//! precocity per decade and the 20 most precocious documents with the opening words of their
//! most precocious chunk (precocity = novelty − transience, as in the novelty paper's
//! reference workflow).
//!
//! Both tables hold one row per document (or chunk) and setting (fraction compared, filter,
//! time radius, and for documents chunks used). The page shows one setting: the one the
//! precocity stage ranks its own top documents by (`top_by` in its manifest), else the one
//! with the most documents whose precocity is defined (ties: the first in (filter, time
//! radius, fraction, chunks used) order), and lists the others.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use common::parquet_io::{ColumnKind, ColumnSpec, TableReader};
use common::schema::{precocity_chunks as pc, precocity_documents as pd};

use crate::corpus::{bin_name, bin_of, quantile, year_bin_width, ChunkId, CorpusScan};
use crate::html::{self, Content, Figure, Section};
use crate::inputs::{RunInputs, PRECOCITY_CHUNKS, PRECOCITY_DOCUMENTS};
use crate::{figures, Result};

/// Documents listed in the top table.
pub const TOP: usize = 20;
/// Words of a chunk's opening shown in the top table.
const OPENING_WORDS: usize = 30;

/// A precocity setting, as written in both tables (floats compared by their bits: the stage
/// writes the same values in every row of a setting).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Setting {
    pub filtered: String,
    pub time_radius: i32,
    pub fraction_compared: u32,
    pub chunks_used: u32,
}

impl Setting {
    fn describe(&self) -> String {
        format!(
            "filter \u{201c}{}\u{201d}, time radius {} years, fraction compared {}, chunks used {}",
            self.filtered,
            self.time_radius,
            f32::from_bits(self.fraction_compared),
            f32::from_bits(self.chunks_used)
        )
    }
}

/// One document under the chosen setting.
#[derive(Debug, Clone)]
pub struct Document {
    pub docid: String,
    pub year: i32,
    pub precocity: f64,
    pub novelty: Option<f64>,
    pub transience: Option<f64>,
}

/// What the section shows, read from the two tables.
#[derive(Debug, Clone)]
pub struct Precocity {
    pub setting: Setting,
    /// Whether `setting` is the one the precocity stage ranked by (else: most defined values).
    pub ranked_by_stage: bool,
    /// Every setting: defined precocity values, document rows.
    pub settings: BTreeMap<Setting, (u64, u64)>,
    /// Documents with defined precocity under the chosen setting.
    pub documents: Vec<Document>,
    /// The top documents' most precocious chunk: docid → (chunk_idx, precocity).
    pub best_chunks: HashMap<String, (i32, f64)>,
}

impl Precocity {
    /// The top documents, most precocious first (ties by docid).
    pub fn top(&self) -> Vec<&Document> {
        let mut docs: Vec<&Document> = self.documents.iter().collect();
        docs.sort_by(|a, b| {
            b.precocity
                .total_cmp(&a.precocity)
                .then_with(|| a.docid.cmp(&b.docid))
        });
        docs.truncate(TOP);
        docs
    }

    /// Chunks whose text the top table shows.
    pub fn top_chunks(&self) -> HashSet<ChunkId> {
        self.best_chunks
            .iter()
            .map(|(d, (c, _))| (d.clone(), *c))
            .collect()
    }
}

const DOC_SPECS: [ColumnSpec; 8] = [
    ColumnSpec::required(pd::DOCID, ColumnKind::Utf8),
    ColumnSpec::required(pd::DATE, ColumnKind::Int32),
    ColumnSpec::required(pd::FILTERED, ColumnKind::Utf8),
    ColumnSpec::required(pd::TIME_RADIUS, ColumnKind::Int32),
    ColumnSpec::required(pd::FRACTION_COMPARED, ColumnKind::Float32),
    ColumnSpec::required(pd::CHUNKS_USED, ColumnKind::Float32),
    ColumnSpec::required(pd::PRECOCITY, ColumnKind::Float32),
    ColumnSpec::optional(pd::NOVELTY, ColumnKind::Float32),
];
const DOC_TRANSIENCE: ColumnSpec = ColumnSpec::optional(pd::TRANSIENCE, ColumnKind::Float32);

/// Streams the document table, calling `f(setting, docid, year, precocity, novelty,
/// transience)` per row.
fn each_document(
    path: &Path,
    mut f: impl FnMut(Setting, &str, i32, Option<f64>, Option<f64>, Option<f64>),
) -> Result<()> {
    let mut specs = DOC_SPECS.to_vec();
    specs.push(DOC_TRANSIENCE);
    let mut r = TableReader::open(path, pd::TABLE, &specs)?;
    while let Some(b) = r.next_batch()? {
        for i in 0..b.len() {
            let setting = Setting {
                filtered: b.text(pd::FILTERED, i)?.to_string(),
                time_radius: b.i32(pd::TIME_RADIUS, i)?,
                fraction_compared: b
                    .opt_f32(pd::FRACTION_COMPARED, i)
                    .unwrap_or(f32::NAN)
                    .to_bits(),
                chunks_used: b.opt_f32(pd::CHUNKS_USED, i).unwrap_or(f32::NAN).to_bits(),
            };
            let v = |k: &str| b.opt_f32(k, i).map(f64::from).filter(|v| v.is_finite());
            f(
                setting,
                b.text(pd::DOCID, i)?,
                b.i32(pd::DATE, i)?,
                v(pd::PRECOCITY),
                v(pd::NOVELTY),
                v(pd::TRANSIENCE),
            );
        }
    }
    Ok(())
}

/// The setting the precocity stage ranked its top documents by: `top_by` in the parameters
/// its MANIFEST.json records for the document table (absent from older runs and other tools'
/// tables).
fn recorded_top_setting(docs_path: &Path) -> Option<Setting> {
    let dir = docs_path.parent()?;
    let name = docs_path.file_name()?.to_str()?;
    let manifest = common::manifest::Manifest::load(dir).ok()?;
    let top = &manifest.files.get(name)?.parameters["top_by"];
    Some(Setting {
        filtered: top["filtered"].as_str()?.to_string(),
        time_radius: i32::try_from(top["time_radius"].as_i64()?).ok()?,
        fraction_compared: (top["fraction_compared"].as_f64()? as f32).to_bits(),
        chunks_used: (top["chunks_used"].as_f64()? as f32).to_bits(),
    })
}

/// Reads both tables (streamed twice: settings, then the chosen one's rows).
pub fn load(
    (docs_path, chunks_path): &(std::path::PathBuf, std::path::PathBuf),
) -> Result<Precocity> {
    let mut settings: BTreeMap<Setting, (u64, u64)> = BTreeMap::new();
    each_document(docs_path, |s, _, _, p, _, _| {
        let e = settings.entry(s).or_default();
        e.0 += p.is_some() as u64;
        e.1 += 1;
    })?;
    // The stage's own ranking when its manifest records one that has values; else the
    // setting with the most defined values, BTreeMap order breaking ties.
    let recorded =
        recorded_top_setting(docs_path).filter(|s| settings.get(s).is_some_and(|n| n.0 > 0));
    let ranked_by_stage = recorded.is_some();
    let setting = recorded
        .or_else(|| {
            settings
                .iter()
                .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then_with(|| b.0.cmp(a.0)))
                .map(|(s, _)| s.clone())
        })
        .unwrap_or_default();
    let mut documents = Vec::new();
    each_document(docs_path, |s, d, y, p, n, t| {
        if s == setting {
            if let Some(p) = p {
                documents.push(Document {
                    docid: d.to_string(),
                    year: y,
                    precocity: p,
                    novelty: n,
                    transience: t,
                });
            }
        }
    })?;
    let mut pre = Precocity {
        setting,
        ranked_by_stage,
        settings,
        documents,
        best_chunks: HashMap::new(),
    };
    let top: HashSet<String> = pre.top().iter().map(|d| d.docid.clone()).collect();
    pre.best_chunks = best_chunks(chunks_path, &pre.setting, &top)?;
    Ok(pre)
}

/// For each document of `top`, its chunk with the highest defined precocity under `setting`
/// (ties: the first chunk).
fn best_chunks(
    path: &Path,
    setting: &Setting,
    top: &HashSet<String>,
) -> Result<HashMap<String, (i32, f64)>> {
    let specs = [
        ColumnSpec::required(pc::DOC_ID, ColumnKind::Utf8),
        ColumnSpec::required(pc::CHUNK_IDX, ColumnKind::Int32),
        ColumnSpec::required(pc::FILTERED, ColumnKind::Utf8),
        ColumnSpec::required(pc::TIME_RADIUS, ColumnKind::Int32),
        ColumnSpec::required(pc::FRACTION_COMPARED, ColumnKind::Float32),
        ColumnSpec::required(pc::PRECOCITY, ColumnKind::Float32),
    ];
    let mut best: HashMap<String, (i32, f64)> = HashMap::new();
    let mut r = TableReader::open(path, pc::TABLE, &specs)?;
    while let Some(b) = r.next_batch()? {
        for i in 0..b.len() {
            let doc = b.text(pc::DOC_ID, i)?;
            if !top.contains(doc)
                || b.text(pc::FILTERED, i)? != setting.filtered
                || b.i32(pc::TIME_RADIUS, i)? != setting.time_radius
                || b.opt_f32(pc::FRACTION_COMPARED, i).map(f32::to_bits)
                    != Some(setting.fraction_compared)
            {
                continue;
            }
            let Some(p) = b
                .opt_f32(pc::PRECOCITY, i)
                .map(f64::from)
                .filter(|p| p.is_finite())
            else {
                continue;
            };
            let idx = b.i32(pc::CHUNK_IDX, i)?;
            let e = best.entry(doc.to_string()).or_insert((idx, p));
            if p > e.1 || (p == e.1 && idx < e.0) {
                *e = (idx, p);
            }
        }
    }
    Ok(best)
}

fn opening(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut s = words[..words.len().min(OPENING_WORDS)].join(" ");
    if words.len() > OPENING_WORDS {
        s.push_str(" \u{2026}");
    }
    s
}

pub fn section(
    pre: Option<&Precocity>,
    scan: Option<&CorpusScan>,
    _inputs: &RunInputs,
) -> Result<Section> {
    const ID: &str = "precocity";
    const TITLE: &str = "Precocity";
    let Some(pre) = pre else {
        return Ok(Section::missing(
            ID,
            TITLE,
            format!(
                "no {PRECOCITY_DOCUMENTS} and {PRECOCITY_CHUNKS} in the run folder (the \
                 precocity stage did not run)"
            ),
        ));
    };
    if pre.documents.is_empty() {
        return Ok(Section::missing(
            ID,
            TITLE,
            format!("{PRECOCITY_DOCUMENTS} has no document with a defined precocity"),
        ));
    }
    let width = year_bin_width(pre.documents.iter().map(|d| d.year));
    let per = bin_name(width);
    let mut groups: BTreeMap<i32, Vec<f64>> = BTreeMap::new();
    for d in &pre.documents {
        groups
            .entry(bin_of(d.year, width))
            .or_default()
            .push(d.precocity);
    }
    for v in groups.values_mut() {
        v.sort_by(f64::total_cmp);
    }
    let groups: Vec<(i32, Vec<f64>)> = groups.into_iter().collect();
    let mut h = String::new();
    let _ = writeln!(
        h,
        "<p>Precocity (novelty \u{2212} transience; higher: a document closer to what came \
         after it than to what came before) of <span class=\"precocity-documents\">{}</span> \
         documents, under {}.</p>",
        pre.documents.len(),
        html::esc(&pre.setting.describe())
    );
    if pre.settings.len() > 1 {
        let rows: Vec<Vec<String>> = pre
            .settings
            .iter()
            .filter(|(s, _)| **s != pre.setting)
            .map(|(s, (defined, rows))| vec![s.describe(), defined.to_string(), rows.to_string()])
            .collect();
        let why = if pre.ranked_by_stage {
            "the one shown is the one the precocity stage ranks its top documents by"
        } else {
            "the one shown has the most defined values"
        };
        h.push_str(&html::data_table(
            &format!("Other settings in the table ({why})"),
            "precocity-settings",
            &["setting", "documents with precocity", "rows"],
            &rows,
        ));
    }
    let svg = figures::boxplots(
        "precocity-per-decade",
        &format!("Document precocity per {per}"),
        &format!("{per} (start year)"),
        "precocity (novelty \u{2212} transience)",
        width,
        &groups,
    )?;
    h.push_str("{fig:precocity-per-decade}");
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|(k, v)| {
            vec![
                k.to_string(),
                v.len().to_string(),
                html::num(quantile(v, 0.25), 4),
                html::num(quantile(v, 0.5), 4),
                html::num(quantile(v, 0.75), 4),
            ]
        })
        .collect();
    h.push_str(&html::data_table(
        &format!("Data: precocity per {per} (quartiles, nearest rank)"),
        "precocity-per-decade",
        &[
            per,
            "documents",
            "25th percentile",
            "median",
            "75th percentile",
        ],
        &rows,
    ));
    let _ = writeln!(h, "<h3>The {TOP} most precocious documents</h3>");
    let top_rows: Vec<Vec<String>> = pre
        .top()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let chunk = pre.best_chunks.get(&d.docid);
            let text = match (chunk, scan) {
                (Some(&(c, _)), Some(scan)) => scan
                    .texts
                    .get(&(d.docid.clone(), c))
                    .map(|t| format!("[chunk {c}] {}", opening(t)))
                    .unwrap_or_else(|| format!("[chunk {c}] (not in the corpus)")),
                (Some(&(c, _)), None) => format!("[chunk {c}] (no --corpus for its text)"),
                (None, _) => "(no chunk with a defined precocity)".into(),
            };
            vec![
                (i + 1).to_string(),
                d.docid.clone(),
                d.year.to_string(),
                format!("{:.4}", d.precocity),
                html::num(d.novelty, 4),
                html::num(d.transience, 4),
                text,
            ]
        })
        .collect();
    h.push_str(&html::table(
        "text precocity-top",
        &[
            "rank",
            "document",
            "year",
            "precocity",
            "novelty",
            "transience",
            "most precocious chunk, opening words",
        ],
        &top_rows,
        &[],
    ));
    Ok(Section {
        id: ID,
        title: TITLE,
        content: Content::Shown {
            html: h,
            figures: vec![Figure {
                name: "precocity-per-decade".into(),
                svg,
                caption: format!(
                    "Box: quartiles of document precocity per {per}; whiskers: the most \
                     extreme documents within 1.5 \u{d7} the interquartile range of the box; \
                     points: documents beyond."
                ),
            }],
            maps: Vec::new(),
        },
    })
}
