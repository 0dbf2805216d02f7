//! Import of the layout researchers already have: a metadata TSV (one row per document, with an
//! id and a year column among others) and one `{id}.txt` per document whose lines are
//! `chunk_idx<TAB>chunk text`.
//!
//! Problems that affect one document or one line (a missing chunk file, a malformed line, a
//! year that is not an integer) are collected in a [`ChunkFilesReport`] with file and line, and the
//! rest is imported; problems that make the whole input unusable (no metadata, no id column)
//! are errors. A document id listed twice in the metadata, or a chunk index twice in one chunk
//! file, is an error naming both lines: the rule every reader of chunks follows (see
//! [`crate::corpus`]), since which copy is meant cannot be guessed. Empty or whitespace-only
//! chunk texts follow [`EmptyTexts`] (reported and skipped by [`read_chunk_files`]). A leading UTF-8
//! byte-order mark is ignored in every file.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::corpus::EmptyTexts;
use crate::error::{Error, Result};
use crate::provenance::{sha256_file, Provenance};
use crate::tables::{ChunkRow, ChunksWriter};

/// Where a chunk-file layout lives and how its metadata names the columns we need.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkFileLayout {
    pub metadata: PathBuf,
    pub chunks_dir: PathBuf,
    pub id_column: String,
    pub year_column: String,
}

impl ChunkFileLayout {
    /// The conventional layout: `dir/metadata.tsv` and `dir/chunks/`, columns `paperId`/`year`.
    pub fn in_dir(dir: &Path) -> Self {
        ChunkFileLayout {
            metadata: dir.join("metadata.tsv"),
            chunks_dir: dir.join("chunks"),
            id_column: "paperId".into(),
            year_column: "year".into(),
        }
    }

    pub fn chunk_file(&self, doc_id: &str) -> PathBuf {
        self.chunks_dir.join(format!("{doc_id}.txt"))
    }
}

/// A skipped line or document, with where it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.reason)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChunkFilesReport {
    pub documents: u64,
    pub chunks: u64,
    /// Documents listed in the metadata whose `{id}.txt` does not exist.
    pub missing_chunk_files: Vec<String>,
    /// Documents whose chunk file had no usable line.
    pub empty_documents: Vec<String>,
    /// Skipped metadata rows and chunk lines.
    pub malformed: Vec<Problem>,
    /// Chunk lines whose text is empty or whitespace-only (skipped ones are also in
    /// `malformed`; with [`EmptyTexts::Embed`] they are passed on).
    pub empty_texts: u64,
}

struct MetaRow {
    doc_id: String,
    year: i32,
}

/// Reads the layout document by document, calling `on_doc` with each document's chunks in
/// chunk_idx order; empty chunk texts are reported in `malformed` and skipped. Memory is
/// bounded by the largest document. Errors of `on_doc` (any type that `common`'s errors
/// convert into) stop the reading.
pub fn read_chunk_files<E: From<Error>>(
    layout: &ChunkFileLayout,
    on_doc: impl FnMut(Vec<ChunkRow>) -> std::result::Result<(), E>,
) -> std::result::Result<ChunkFilesReport, E> {
    read_chunk_files_with(layout, EmptyTexts::Skip, on_doc)
}

/// As [`read_chunk_files`], with empty or whitespace-only chunk texts handled as `empty` says:
/// `Stop` is an error naming the chunk file and line, `Skip` reports and skips the line,
/// `Embed` passes the chunk on with an empty text.
pub fn read_chunk_files_with<E: From<Error>>(
    layout: &ChunkFileLayout,
    empty: EmptyTexts,
    mut on_doc: impl FnMut(Vec<ChunkRow>) -> std::result::Result<(), E>,
) -> std::result::Result<ChunkFilesReport, E> {
    let mut report = ChunkFilesReport::default();
    let docs = read_metadata(layout, &mut report)?;
    for doc in docs {
        let path = layout.chunk_file(&doc.doc_id);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                report.missing_chunk_files.push(doc.doc_id);
                continue;
            }
            Err(e) => return Err(Error::io(&path, e).into()),
        };
        let chunks = read_chunk_file(&path, file, &doc, empty, &mut report)?;
        if chunks.is_empty() {
            report.empty_documents.push(doc.doc_id);
            continue;
        }
        report.documents += 1;
        report.chunks += chunks.len() as u64;
        on_doc(chunks)?;
    }
    if report.chunks == 0 {
        return Err(Error::Invalid(format!(
            "chunk-file layout {}: no chunk could be read ({} documents without a chunk file, {} malformed lines)",
            layout.metadata.display(),
            report.missing_chunk_files.len(),
            report.malformed.len()
        ))
        .into());
    }
    Ok(report)
}

fn read_metadata(layout: &ChunkFileLayout, report: &mut ChunkFilesReport) -> Result<Vec<MetaRow>> {
    let path = &layout.metadata;
    let mut lines = crate::text::open(path)?.lines();
    let header = match lines.next() {
        Some(h) => h.map_err(|e| Error::io(path, e))?,
        None => {
            return Err(Error::BadLine {
                path: path.clone(),
                line: 1,
                reason: "empty metadata file (no header)".into(),
            })
        }
    };
    let columns: Vec<&str> = header.trim_end_matches('\r').split('\t').collect();
    let find = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| Error::BadLine {
                path: path.clone(),
                line: 1,
                reason: format!(
                    "no column `{name}` in the header (columns: {}); set the id/year column names",
                    columns.join(", ")
                ),
            })
    };
    let (id_col, year_col) = (find(&layout.id_column)?, find(&layout.year_column)?);
    let file_name = path.display().to_string();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut docs = Vec::new();
    for (i, line) in lines.enumerate() {
        let line_no = i as u64 + 2;
        let line = line.map_err(|e| Error::io(path, e))?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let mut problem = |reason: String| {
            report.malformed.push(Problem {
                file: file_name.clone(),
                line: line_no,
                reason,
            })
        };
        let (Some(id), Some(year)) = (fields.get(id_col), fields.get(year_col)) else {
            problem(format!(
                "{} fields, the header has {}",
                fields.len(),
                columns.len()
            ));
            continue;
        };
        let id = id.trim();
        if id.is_empty() || id.contains('/') || id.contains('\\') {
            problem(format!("unusable document id {id:?}"));
            continue;
        }
        let Ok(year) = year.trim().parse::<i32>() else {
            problem(format!("year {year:?} is not an integer"));
            continue;
        };
        if let Some(first) = seen.insert(id.to_string(), line_no) {
            return Err(Error::BadLine {
                path: path.clone(),
                line: line_no,
                reason: format!(
                    "duplicate document id {id:?} (first at line {first}); each document must be listed once"
                ),
            });
        }
        docs.push(MetaRow {
            doc_id: id.to_string(),
            year,
        });
    }
    if docs.is_empty() && report.malformed.is_empty() {
        return Err(Error::BadLine {
            path: path.clone(),
            line: 2,
            reason: "no document rows after the header".into(),
        });
    }
    Ok(docs)
}

fn read_chunk_file(
    path: &Path,
    file: std::fs::File,
    doc: &MetaRow,
    empty: EmptyTexts,
    report: &mut ChunkFilesReport,
) -> Result<Vec<ChunkRow>> {
    let file_name = path.display().to_string();
    let mut chunks: Vec<ChunkRow> = Vec::new();
    let mut seen: HashMap<i32, u64> = HashMap::new();
    let reader = crate::text::skip_bom(std::io::BufReader::new(file));
    let malformed = &mut report.malformed;
    for (i, line) in reader.map_err(|e| Error::io(path, e))?.lines().enumerate() {
        let line_no = i as u64 + 1;
        let line = line.map_err(|e| Error::io(path, e))?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let mut problem = |reason: String| {
            malformed.push(Problem {
                file: file_name.clone(),
                line: line_no,
                reason,
            })
        };
        let Some((idx, text)) = line.split_once('\t') else {
            problem("no TAB between chunk index and text".into());
            continue;
        };
        let Ok(idx) = idx.trim().parse::<i32>() else {
            problem(format!("chunk index {idx:?} is not an integer"));
            continue;
        };
        let text = text.trim();
        if let Some(first) = seen.insert(idx, line_no) {
            return Err(Error::BadLine {
                path: path.into(),
                line: line_no,
                reason: format!(
                    "duplicate chunk index {idx} (first at line {first}); each (doc_id, chunk_idx) must appear once"
                ),
            });
        }
        if text.is_empty() {
            report.empty_texts += 1;
            match empty {
                EmptyTexts::Stop => {
                    return Err(Error::BadLine {
                        path: path.into(),
                        line: line_no,
                        reason: format!("chunk {idx} has empty text; {}", EmptyTexts::STOP_HINT),
                    })
                }
                EmptyTexts::Skip => {
                    problem(format!("chunk {idx} has empty text"));
                    continue;
                }
                EmptyTexts::Embed => {}
            }
        }
        chunks.push(ChunkRow {
            doc_id: doc.doc_id.clone(),
            year: doc.year,
            chunk_idx: idx,
            text: text.to_string(),
        });
    }
    chunks.sort_by_key(|c| c.chunk_idx);
    Ok(chunks)
}

/// Imports a chunk-file layout into a `chunks` Parquet file (atomically) and records it in the
/// MANIFEST.json of its folder. The file's provenance records the metadata file's sha256.
pub fn import_chunk_files(
    layout: &ChunkFileLayout,
    out: &Path,
    stage: &str,
) -> Result<ChunkFilesReport> {
    let provenance = Provenance::new(
        stage,
        env!("CARGO_PKG_VERSION"),
        serde_json::to_value(layout).expect("layout serializes"),
    )
    .with_input_hash(
        layout.metadata.display().to_string(),
        sha256_file(&layout.metadata)?,
    );
    let mut writer = ChunksWriter::create(out, &provenance)?;
    let report = read_chunk_files::<Error>(layout, |chunks| {
        for c in chunks {
            writer.push(c)?;
        }
        Ok(())
    })?;
    let rows = writer.finish()?;
    crate::manifest::record_beside(out, Some(rows), &provenance)?;
    Ok(report)
}
