//! Typed rows of the three pipeline tables, with streaming readers and atomic writers built on
//! [`crate::parquet_io`]. Column names and types come from [`crate::schema`].

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, FixedSizeListArray, Float32Array, Int32Array, Int64Array};

use crate::error::{Error, Result};
use crate::parquet_io::{
    string_array, ColumnKind, ColumnSpec, TableReader, TableWriter, BATCH_ROWS,
};
use crate::provenance::Provenance;
use crate::schema::{self, Category, Side};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRow {
    pub doc_id: String,
    pub year: i32,
    pub chunk_idx: i32,
    pub text: String,
}

/// Streams a `chunks` file batch by batch, rejecting null or blank ids and null texts, and
/// blank (empty or whitespace-only) texts unless [`ChunksReader::keep_blank_texts`] is set.
pub struct ChunksReader {
    inner: TableReader,
    keep_blank_texts: bool,
}

impl ChunksReader {
    const SPECS: [ColumnSpec; 4] = {
        use schema::chunks::*;
        [
            ColumnSpec::required(DOC_ID, ColumnKind::Utf8),
            ColumnSpec::required(YEAR, ColumnKind::Int32),
            ColumnSpec::required(CHUNK_IDX, ColumnKind::Int32),
            ColumnSpec::required(TEXT, ColumnKind::Utf8),
        ]
    };

    pub fn open(path: &Path) -> Result<Self> {
        let inner = TableReader::open(path, schema::chunks::TABLE, &Self::SPECS)?;
        Ok(ChunksReader {
            inner,
            keep_blank_texts: false,
        })
    }

    /// Passes empty and whitespace-only texts through, for callers that apply their own rule
    /// ([`crate::corpus::EmptyTexts`]); null texts stay errors.
    pub fn keep_blank_texts(mut self) -> Self {
        self.keep_blank_texts = true;
        self
    }

    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    pub fn num_rows(&self) -> u64 {
        self.inner.num_rows()
    }

    pub fn next_rows(&mut self) -> Result<Option<Vec<ChunkRow>>> {
        use schema::chunks::*;
        let keep_blank = self.keep_blank_texts;
        let Some(b) = self.inner.next_batch()? else {
            return Ok(None);
        };
        let mut rows = Vec::with_capacity(b.len());
        for i in 0..b.len() {
            let text = if keep_blank {
                b.opt_str(TEXT, i)?
                    .ok_or_else(|| b.bad_value(i, TEXT, "null value"))?
            } else {
                b.text(TEXT, i)?
            };
            rows.push(ChunkRow {
                doc_id: b.text(DOC_ID, i)?.to_string(),
                year: b.i32(YEAR, i)?,
                chunk_idx: b.i32(CHUNK_IDX, i)?,
                text: text.to_string(),
            });
        }
        Ok(Some(rows))
    }

    /// Reads the whole file; for the small tables and tests. Stages stream with `next_rows`.
    pub fn read_all(path: &Path) -> Result<Vec<ChunkRow>> {
        let mut reader = Self::open(path)?;
        let mut all = Vec::with_capacity(reader.num_rows() as usize);
        while let Some(rows) = reader.next_rows()? {
            all.extend(rows);
        }
        Ok(all)
    }
}

/// Buffers rows and writes `chunks` batches; atomic on [`ChunksWriter::finish`].
pub struct ChunksWriter {
    inner: TableWriter,
    buf: Vec<ChunkRow>,
}

impl ChunksWriter {
    pub fn create(path: &Path, provenance: &Provenance) -> Result<Self> {
        let inner = TableWriter::create(
            path,
            schema::chunks_schema(),
            schema::chunks::TABLE,
            provenance,
        )?;
        Ok(ChunksWriter {
            inner,
            buf: Vec::new(),
        })
    }

    pub fn push(&mut self, row: ChunkRow) -> Result<()> {
        self.buf.push(row);
        if self.buf.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.buf);
        let columns: Vec<ArrayRef> = vec![
            string_array(rows.iter().map(|r| Some(r.doc_id.as_str()))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.year))),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| r.chunk_idx),
            )),
            string_array(rows.iter().map(|r| Some(r.text.as_str()))),
        ];
        self.inner.write_columns(columns)
    }

    pub fn finish(mut self) -> Result<u64> {
        self.flush()?;
        self.inner.finish()
    }
}

/// Who wrote a paraphrase and how; all of it is recorded per row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParaphraseProvenance {
    pub model: Option<String>,
    pub system_prompt_id: Option<String>,
    pub prompt_id: Option<String>,
    pub temperature: Option<f32>,
    pub seed: Option<i64>,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PairRow {
    pub pair_id: String,
    pub doc_id: String,
    pub year: i32,
    /// None only while the side still awaits its paraphrase.
    pub anchor: Option<String>,
    pub positive: Option<String>,
    pub negative: Option<String>,
    pub category: Category,
    pub paraphrase_side: Option<Side>,
    pub provenance: ParaphraseProvenance,
}

/// Streams a `pairs` file. Anchor/positive may be null (a side awaiting paraphrase); the
/// provenance and negative columns may be absent.
pub struct PairsReader(TableReader);

impl PairsReader {
    const SPECS: [ColumnSpec; 16] = {
        use schema::pairs::*;
        [
            ColumnSpec::required(PAIR_ID, ColumnKind::Utf8),
            ColumnSpec::required(DOC_ID, ColumnKind::Utf8),
            ColumnSpec::required(YEAR, ColumnKind::Int32),
            ColumnSpec::required(ANCHOR, ColumnKind::Utf8),
            ColumnSpec::required(POSITIVE, ColumnKind::Utf8),
            ColumnSpec::optional(NEGATIVE, ColumnKind::Utf8),
            ColumnSpec::required(CATEGORY, ColumnKind::Utf8),
            ColumnSpec::optional(PARAPHRASE_SIDE, ColumnKind::Utf8),
            ColumnSpec::optional(PARA_MODEL, ColumnKind::Utf8),
            ColumnSpec::optional(PARA_SYSTEM_PROMPT_ID, ColumnKind::Utf8),
            ColumnSpec::optional(PARA_PROMPT_ID, ColumnKind::Utf8),
            ColumnSpec::optional(PARA_TEMPERATURE, ColumnKind::Float32),
            ColumnSpec::optional(PARA_SEED, ColumnKind::Int64),
            ColumnSpec::optional(PARA_FINISH_REASON, ColumnKind::Utf8),
            ColumnSpec::optional(PARA_PROMPT_TOKENS, ColumnKind::Int32),
            ColumnSpec::optional(PARA_COMPLETION_TOKENS, ColumnKind::Int32),
        ]
    };

    pub fn open(path: &Path) -> Result<Self> {
        TableReader::open(path, schema::pairs::TABLE, &Self::SPECS).map(PairsReader)
    }

    pub fn num_rows(&self) -> u64 {
        self.0.num_rows()
    }

    pub fn provenance(&self) -> Option<&Provenance> {
        self.0.provenance()
    }

    pub fn next_rows(&mut self) -> Result<Option<Vec<PairRow>>> {
        use schema::pairs::*;
        let Some(b) = self.0.next_batch()? else {
            return Ok(None);
        };
        let owned = |s: Option<&str>| s.map(str::to_string);
        let mut rows = Vec::with_capacity(b.len());
        for i in 0..b.len() {
            let category = b.text(CATEGORY, i)?;
            let category = Category::parse(category).ok_or_else(|| {
                b.bad_value(i, CATEGORY, format!("unknown category {category:?}"))
            })?;
            let side = match b.opt_str(PARAPHRASE_SIDE, i)? {
                None => None,
                Some(s) => Some(Side::parse(s).ok_or_else(|| {
                    b.bad_value(i, PARAPHRASE_SIDE, format!("unknown side {s:?}"))
                })?),
            };
            rows.push(PairRow {
                pair_id: b.text(PAIR_ID, i)?.to_string(),
                doc_id: b.text(DOC_ID, i)?.to_string(),
                year: b.i32(YEAR, i)?,
                anchor: owned(b.opt_str(ANCHOR, i)?),
                positive: owned(b.opt_str(POSITIVE, i)?),
                negative: owned(b.opt_str(NEGATIVE, i)?),
                category,
                paraphrase_side: side,
                provenance: ParaphraseProvenance {
                    model: owned(b.opt_str(PARA_MODEL, i)?),
                    system_prompt_id: owned(b.opt_str(PARA_SYSTEM_PROMPT_ID, i)?),
                    prompt_id: owned(b.opt_str(PARA_PROMPT_ID, i)?),
                    temperature: b.opt_f32(PARA_TEMPERATURE, i),
                    seed: b.opt_i64(PARA_SEED, i),
                    finish_reason: owned(b.opt_str(PARA_FINISH_REASON, i)?),
                    prompt_tokens: b.opt_i32(PARA_PROMPT_TOKENS, i),
                    completion_tokens: b.opt_i32(PARA_COMPLETION_TOKENS, i),
                },
            });
        }
        Ok(Some(rows))
    }

    pub fn read_all(path: &Path) -> Result<Vec<PairRow>> {
        let mut reader = Self::open(path)?;
        let mut all = Vec::with_capacity(reader.num_rows() as usize);
        while let Some(rows) = reader.next_rows()? {
            all.extend(rows);
        }
        Ok(all)
    }
}

/// Writes a whole `pairs` table atomically.
pub fn write_pairs(path: &Path, rows: &[PairRow], provenance: &Provenance) -> Result<u64> {
    let mut w = TableWriter::create(
        path,
        schema::pairs_schema(),
        schema::pairs::TABLE,
        provenance,
    )?;
    for rows in rows.chunks(BATCH_ROWS) {
        let p = |f: fn(&PairRow) -> Option<&str>| string_array(rows.iter().map(f));
        let columns: Vec<ArrayRef> = vec![
            p(|r| Some(&r.pair_id)),
            p(|r| Some(&r.doc_id)),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.year))),
            p(|r| r.anchor.as_deref()),
            p(|r| r.positive.as_deref()),
            p(|r| r.negative.as_deref()),
            p(|r| Some(r.category.as_str())),
            p(|r| r.paraphrase_side.map(Side::as_str)),
            p(|r| r.provenance.model.as_deref()),
            p(|r| r.provenance.system_prompt_id.as_deref()),
            p(|r| r.provenance.prompt_id.as_deref()),
            Arc::new(Float32Array::from_iter(
                rows.iter().map(|r| r.provenance.temperature),
            )),
            Arc::new(Int64Array::from_iter(
                rows.iter().map(|r| r.provenance.seed),
            )),
            p(|r| r.provenance.finish_reason.as_deref()),
            Arc::new(Int32Array::from_iter(
                rows.iter().map(|r| r.provenance.prompt_tokens),
            )),
            Arc::new(Int32Array::from_iter(
                rows.iter().map(|r| r.provenance.completion_tokens),
            )),
        ];
        w.write_columns(columns)?;
    }
    w.finish()
}

/// The key of an embedded chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkKey {
    pub doc_id: String,
    pub chunk_idx: i32,
    pub year: i32,
}

/// The doc_id, chunk_idx and year columns of `keys` (the `ids` table, and the start of an
/// `embeddings` batch).
pub fn key_columns(keys: &[ChunkKey]) -> Vec<ArrayRef> {
    vec![
        string_array(keys.iter().map(|k| Some(k.doc_id.as_str()))),
        Arc::new(Int32Array::from_iter_values(
            keys.iter().map(|k| k.chunk_idx),
        )),
        Arc::new(Int32Array::from_iter_values(keys.iter().map(|k| k.year))),
    ]
}

/// Writes `embeddings` batches: keys plus a row-major `[rows × dim]` matrix.
pub struct EmbeddingsWriter {
    inner: TableWriter,
    dim: usize,
}

impl EmbeddingsWriter {
    pub fn create(path: &Path, dim: usize, provenance: &Provenance) -> Result<Self> {
        // ~8 MiB of embeddings per row group keeps the writer's buffer, and so a shard's
        // peak memory, independent of the shard's size.
        let row_group_rows = (8 << 20) / (4 * dim.max(1));
        let inner = TableWriter::create_with_row_groups(
            path,
            schema::embeddings_schema(dim),
            schema::embeddings::TABLE,
            provenance,
            row_group_rows,
        )?;
        Ok(EmbeddingsWriter { inner, dim })
    }

    pub fn write(&mut self, keys: &[ChunkKey], matrix: &[f32]) -> Result<()> {
        if matrix.len() != keys.len() * self.dim {
            return Err(Error::Invalid(format!(
                "embedding matrix has {} values for {} rows of dim {}",
                matrix.len(),
                keys.len(),
                self.dim
            )));
        }
        let values = Arc::new(Float32Array::from(matrix.to_vec()));
        let item = Arc::new(arrow::datatypes::Field::new(
            schema::embeddings::ITEM,
            arrow::datatypes::DataType::Float32,
            false,
        ));
        let list =
            FixedSizeListArray::try_new(item, self.dim as i32, values, None).map_err(|source| {
                Error::Arrow {
                    path: self.inner.dest().into(),
                    source,
                }
            })?;
        let mut columns = key_columns(keys);
        columns.push(Arc::new(list));
        self.inner.write_columns(columns)
    }

    pub fn finish(self) -> Result<u64> {
        self.inner.finish()
    }
}

/// Streams an `embeddings` file as keys plus a row-major matrix per batch.
pub struct EmbeddingsReader {
    inner: TableReader,
    dim: Option<usize>,
}

impl EmbeddingsReader {
    const SPECS: [ColumnSpec; 4] = {
        use schema::embeddings::*;
        [
            ColumnSpec::required(DOC_ID, ColumnKind::Utf8),
            ColumnSpec::required(CHUNK_IDX, ColumnKind::Int32),
            ColumnSpec::required(YEAR, ColumnKind::Int32),
            ColumnSpec::required(EMBEDDING, ColumnKind::Embedding),
        ]
    };

    pub fn open(path: &Path) -> Result<Self> {
        let inner = TableReader::open(path, schema::embeddings::TABLE, &Self::SPECS)?;
        Ok(EmbeddingsReader { inner, dim: None })
    }

    pub fn provenance(&self) -> Option<&Provenance> {
        self.inner.provenance()
    }

    pub fn num_rows(&self) -> u64 {
        self.inner.num_rows()
    }

    /// Embedding dimension; known after the first batch.
    pub fn dim(&self) -> Option<usize> {
        self.dim
    }

    /// Reads the whole file as keys plus a row-major matrix; for small files and tests.
    /// Stages stream with `next_rows`.
    pub fn read_all(path: &Path) -> Result<(Vec<ChunkKey>, Vec<f32>)> {
        let mut reader = Self::open(path)?;
        let (mut keys, mut matrix) = (Vec::new(), Vec::new());
        while let Some((k, m)) = reader.next_rows()? {
            keys.extend(k);
            matrix.extend(m);
        }
        Ok((keys, matrix))
    }

    pub fn next_rows(&mut self) -> Result<Option<(Vec<ChunkKey>, Vec<f32>)>> {
        use schema::embeddings::*;
        let Some(b) = self.inner.next_batch()? else {
            return Ok(None);
        };
        let list = b.column(EMBEDDING).expect("required");
        let list = list
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .expect("checked at open");
        let dim = list.value_length() as usize;
        let values = list
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .expect("checked at open");
        let mut keys = Vec::with_capacity(b.len());
        let mut matrix = Vec::with_capacity(b.len() * dim);
        for i in 0..b.len() {
            if list.is_null(i) {
                return Err(b.bad_value(i, EMBEDDING, "null embedding"));
            }
            keys.push(ChunkKey {
                doc_id: b.text(DOC_ID, i)?.to_string(),
                chunk_idx: b.i32(CHUNK_IDX, i)?,
                year: b.i32(YEAR, i)?,
            });
            let start = (list.offset() + i) * dim;
            matrix.extend_from_slice(&values.values()[start..start + dim]);
        }
        self.dim = Some(dim);
        Ok(Some((keys, matrix)))
    }
}
