//! A corpus as stages take it: a `chunks` Parquet file or a chunk-file layout, streamed in
//! batches, under the rules every stage that reads chunks shares:
//!
//! - **Duplicates.** A (doc_id, chunk_idx) that appears twice stops the read with the file and
//!   row of both copies (a chunks file appended to itself, a document listed twice): which
//!   copy is meant cannot be guessed, and an embeddings table would get two rows for one key.
//!   The check keeps one 64-bit hash per chunk (~16 bytes of memory per chunk) and confirms a
//!   repeated hash by re-reading the file, so it is exact.
//! - **Empty texts.** An empty or whitespace-only text is a choice ([`EmptyTexts`]):
//!   sentence-transformers embeds it (as `[CLS] [SEP]`), but it is more often a chunking fault.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::chunk_files::{read_chunk_files_with, ChunkFileLayout, ChunkFilesReport};
use crate::error::{Error, Result};
use crate::provenance::{sha256_file, Provenance};
use crate::tables::{ChunkRow, ChunksReader};

/// What a stage does with a chunk whose text is empty or whitespace-only.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum EmptyTexts {
    /// Stop with the file and row of the first one (exit code 2).
    #[default]
    Stop,
    /// Leave it out of the output and count it in the summary.
    Skip,
    /// Embed it as sentence-transformers does (the text tokenizes to `[CLS] [SEP]`).
    Embed,
}

impl EmptyTexts {
    /// What a stopped read says, so the user learns the way out from the error itself.
    pub const STOP_HINT: &'static str = "stopped by `--empty-texts stop`; `--empty-texts embed` embeds such texts as sentence-transformers does, `--empty-texts skip` leaves them out";

    pub fn as_str(self) -> &'static str {
        match self {
            EmptyTexts::Stop => "stop",
            EmptyTexts::Skip => "skip",
            EmptyTexts::Embed => "embed",
        }
    }
}

/// Whether `text` counts as empty: nothing but whitespace.
pub fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

/// What a read of the corpus found besides its rows.
#[derive(Debug, Clone, Default)]
pub struct ReadReport {
    /// The chunk-file layout's import report (skipped lines, missing files); None for Parquet.
    pub chunk_files: Option<ChunkFilesReport>,
    /// Chunks with an empty or whitespace-only text (skipped or passed on, per the rule).
    pub empty_texts: u64,
}

#[derive(Debug, Clone)]
pub enum Corpus {
    Chunks(PathBuf),
    ChunkFiles(ChunkFileLayout),
}

impl Corpus {
    /// Calls `f` with consecutive batches of about `batch_rows` chunks, in corpus order. A
    /// duplicate key is an error; so is an empty text in Parquet (a chunk-file layout reports
    /// and skips such lines, as its import does). For a chunk-file layout, returns its import
    /// report (skipped lines, missing files). Errors of `f` (any type that `common`'s errors
    /// convert into) stop the reading.
    pub fn for_each_batch<E: From<Error>>(
        &self,
        batch_rows: usize,
        f: impl FnMut(Vec<ChunkRow>) -> std::result::Result<(), E>,
    ) -> std::result::Result<Option<ChunkFilesReport>, E> {
        Ok(self.read(batch_rows, None, f)?.chunk_files)
    }

    /// As [`Self::for_each_batch`], with empty texts handled as `empty` says (a stop names
    /// the `--empty-texts` option).
    pub fn for_each_batch_with<E: From<Error>>(
        &self,
        batch_rows: usize,
        empty: EmptyTexts,
        f: impl FnMut(Vec<ChunkRow>) -> std::result::Result<(), E>,
    ) -> std::result::Result<ReadReport, E> {
        self.read(batch_rows, Some(empty), f)
    }

    fn read<E: From<Error>>(
        &self,
        batch_rows: usize,
        empty: Option<EmptyTexts>,
        mut f: impl FnMut(Vec<ChunkRow>) -> std::result::Result<(), E>,
    ) -> std::result::Result<ReadReport, E> {
        match self {
            Corpus::Chunks(path) => {
                let mut reader = ChunksReader::open(path)?;
                if empty.is_some() {
                    reader = reader.keep_blank_texts();
                }
                let mut keys = KeyCheck::new(path);
                let mut report = ReadReport::default();
                let mut row = 0u64;
                let mut buf = Vec::new();
                while let Some(rows) = reader.next_rows()? {
                    for r in rows {
                        keys.check(&r, row)?;
                        row += 1;
                        if is_blank(&r.text) {
                            report.empty_texts += 1;
                            match empty.unwrap_or(EmptyTexts::Stop) {
                                EmptyTexts::Stop => {
                                    return Err(Error::BadValue {
                                        path: path.clone(),
                                        row: row - 1,
                                        column: crate::schema::chunks::TEXT,
                                        reason: format!(
                                            "empty or whitespace-only text; {}",
                                            EmptyTexts::STOP_HINT
                                        ),
                                    }
                                    .into())
                                }
                                EmptyTexts::Skip => continue,
                                EmptyTexts::Embed => {}
                            }
                        }
                        buf.push(r);
                    }
                    if buf.len() >= batch_rows {
                        f(std::mem::take(&mut buf))?;
                    }
                }
                if !buf.is_empty() {
                    f(buf)?;
                }
                Ok(report)
            }
            Corpus::ChunkFiles(layout) => {
                // Duplicates are checked per metadata file and per chunk file by the reader:
                // a key can only repeat inside one of them.
                let mut buf = Vec::new();
                // Without a rule, a chunk-file layout's empty lines are reported and skipped,
                // as its import does.
                let rule = empty.unwrap_or(EmptyTexts::Skip);
                let report = read_chunk_files_with::<E>(layout, rule, |doc| {
                    buf.extend(doc);
                    if buf.len() >= batch_rows {
                        f(std::mem::take(&mut buf))?;
                    }
                    Ok(())
                })?;
                if !buf.is_empty() {
                    f(buf)?;
                }
                Ok(ReadReport {
                    empty_texts: report.empty_texts,
                    chunk_files: Some(report),
                })
            }
        }
    }

    /// Number of chunks when it is known without reading the corpus (Parquet footer).
    pub fn known_rows(&self) -> Option<u64> {
        match self {
            Corpus::Chunks(path) => ChunksReader::open(path).ok().map(|r| r.num_rows()),
            Corpus::ChunkFiles(_) => None,
        }
    }

    /// Records the corpus' identity (sha256 of the Parquet file or of the metadata TSV).
    pub fn add_to(&self, provenance: Provenance) -> Result<Provenance> {
        let path = match self {
            Corpus::Chunks(path) => path,
            Corpus::ChunkFiles(layout) => &layout.metadata,
        };
        Ok(provenance.with_input_hash(path.display().to_string(), sha256_file(path)?))
    }
}

/// The command-line flags that name a corpus, shared by the stages that read one.
#[derive(Debug, Clone, clap::Args)]
pub struct CorpusArgs {
    /// `chunks` Parquet file (doc_id, year, chunk_idx, text; strings may be dictionary-encoded,
    /// as pandas `category` writes them). Each (doc_id, chunk_idx) must appear once, here and in
    /// a chunk-file layout: a repeat stops the run, naming the file and the rows of both copies.
    #[arg(
        long,
        conflicts_with = "chunk_files",
        required_unless_present = "chunk_files"
    )]
    pub chunks: Option<PathBuf>,
    /// Chunk-file layout folder instead: a metadata TSV (one row per document) plus one
    /// `chunks/{id}.txt` file per document (see --metadata, --chunks-dir). `--seed-dir`, its
    /// old name, still works.
    #[arg(long, value_name = "DIR", alias = "seed-dir")]
    pub chunk_files: Option<PathBuf>,
    /// Metadata TSV of the chunk-file layout [default: CHUNK_FILES/metadata.tsv].
    #[arg(long, requires = "chunk_files")]
    pub metadata: Option<PathBuf>,
    /// Folder of {id}.txt chunk files [default: CHUNK_FILES/chunks].
    #[arg(long, requires = "chunk_files")]
    pub chunks_dir: Option<PathBuf>,
    /// Metadata column with the document id.
    #[arg(long, default_value = "paperId")]
    pub id_column: String,
    /// Metadata column with the year.
    #[arg(long, default_value = "year")]
    pub year_column: String,
}

impl CorpusArgs {
    pub fn corpus(&self) -> Corpus {
        match (&self.chunks, &self.chunk_files) {
            (Some(path), _) => Corpus::Chunks(path.clone()),
            (None, dir) => {
                let mut layout =
                    ChunkFileLayout::in_dir(dir.as_deref().unwrap_or(std::path::Path::new(".")));
                layout.metadata = self.metadata.clone().unwrap_or(layout.metadata);
                layout.chunks_dir = self.chunks_dir.clone().unwrap_or(layout.chunks_dir);
                layout.id_column = self.id_column.clone();
                layout.year_column = self.year_column.clone();
                Corpus::ChunkFiles(layout)
            }
        }
    }
}

/// The duplicate-key rule over a Parquet file: one hash per (doc_id, chunk_idx) seen; a
/// repeated hash is confirmed (and the first copy found) by reading the file again.
struct KeyCheck<'a> {
    path: &'a Path,
    seen: HashSet<u64>,
}

impl<'a> KeyCheck<'a> {
    fn new(path: &'a Path) -> Self {
        KeyCheck {
            path,
            seen: HashSet::new(),
        }
    }

    fn hash(doc_id: &str, chunk_idx: i32) -> u64 {
        // SipHash with fixed keys: the same on every run, so a collision would be reproducible.
        let mut h = std::hash::DefaultHasher::new();
        (doc_id, chunk_idx).hash(&mut h);
        h.finish()
    }

    fn check(&mut self, r: &ChunkRow, row: u64) -> Result<()> {
        if self.seen.insert(Self::hash(&r.doc_id, r.chunk_idx)) {
            return Ok(());
        }
        let Some(first) = self.first_row_of(&r.doc_id, r.chunk_idx, row)? else {
            return Ok(()); // two keys with one hash: not a duplicate
        };
        Err(Error::BadValue {
            path: self.path.into(),
            row,
            column: crate::schema::chunks::CHUNK_IDX,
            reason: format!(
                "duplicate chunk (doc_id {:?}, chunk_idx {}), first at row {first}; each (doc_id, chunk_idx) must appear once",
                r.doc_id, r.chunk_idx
            ),
        })
    }

    fn first_row_of(&self, doc_id: &str, chunk_idx: i32, before: u64) -> Result<Option<u64>> {
        let mut reader = ChunksReader::open(self.path)?.keep_blank_texts();
        let mut row = 0u64;
        while let Some(rows) = reader.next_rows()? {
            for r in rows {
                if row >= before {
                    return Ok(None);
                }
                if r.chunk_idx == chunk_idx && r.doc_id == doc_id {
                    return Ok(Some(row));
                }
                row += 1;
            }
        }
        Ok(None)
    }
}
