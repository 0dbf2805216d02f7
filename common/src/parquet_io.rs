//! Streaming Parquet reading and writing over record batches, in bounded memory.
//!
//! Writers are atomic: rows go to a temp file in the destination directory, which is fsynced and
//! renamed over the destination only by [`TableWriter::finish`]; a writer dropped before that
//! (an error, a panic, a kill) leaves no file under the destination name.
//! Readers check the schema up front and name the file, column and row of anything wrong.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::atomic::{commit_rename, parent_dir, temp_path};
use crate::error::{Error, Result};
use crate::provenance::Provenance;

/// Rows per record batch, for reading and writing: small enough to bound memory for passages,
/// large enough that per-batch overhead vanishes.
pub const BATCH_ROWS: usize = 8192;

/// Row-group size for tables of short rows (ids, texts, pairs).
pub const DEFAULT_ROW_GROUP_ROWS: usize = 128 * 1024;

/// A column a reader needs: its name, the canonical type, and whether it may be absent.
#[derive(Debug, Clone, Copy)]
pub struct ColumnSpec {
    pub name: &'static str,
    pub kind: ColumnKind,
    pub optional: bool,
}

impl ColumnSpec {
    /// A column the table must have.
    pub const fn required(name: &'static str, kind: ColumnKind) -> Self {
        ColumnSpec {
            name,
            kind,
            optional: false,
        }
    }

    /// A column the table may lack (readers then see nulls).
    pub const fn optional(name: &'static str, kind: ColumnKind) -> Self {
        ColumnSpec {
            name,
            kind,
            optional: true,
        }
    }
}

/// Canonical column types; readers accept the obvious equivalents (an int64 year written by
/// pandas, large strings and string views written by polars, a pandas `category` or a polars
/// `Categorical`/`Enum`, i.e. an Arrow dictionary of any integer index type over any of those
/// value types) and cast them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Utf8,
    Int32,
    Int64,
    Float32,
    Float64,
    /// FixedSizeList<float32>, any dimension.
    Embedding,
}

impl ColumnKind {
    fn accepts(self, found: &DataType) -> bool {
        use DataType as D;
        // Dictionary encoding changes how values are stored, not what they are: arrow's cast
        // unpacks any integer index type.
        if let D::Dictionary(index, values) = found {
            return index.is_integer() && self != ColumnKind::Embedding && self.accepts(values);
        }
        match self {
            ColumnKind::Utf8 => matches!(found, D::Utf8 | D::LargeUtf8 | D::Utf8View),
            ColumnKind::Int32 | ColumnKind::Int64 => matches!(
                found,
                D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32
            ),
            ColumnKind::Float32 | ColumnKind::Float64 => {
                matches!(found, D::Float16 | D::Float32 | D::Float64)
            }
            ColumnKind::Embedding => match found {
                D::FixedSizeList(f, _) => matches!(f.data_type(), D::Float32),
                _ => false,
            },
        }
    }

    fn target(self, found: &DataType) -> DataType {
        match self {
            ColumnKind::Utf8 => DataType::Utf8,
            ColumnKind::Int32 => DataType::Int32,
            ColumnKind::Int64 => DataType::Int64,
            ColumnKind::Float32 => DataType::Float32,
            ColumnKind::Float64 => DataType::Float64,
            ColumnKind::Embedding => found.clone(),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ColumnKind::Utf8 => "utf8 string",
            ColumnKind::Int32 => "int32",
            ColumnKind::Int64 => "int64",
            ColumnKind::Float32 => "float32",
            ColumnKind::Float64 => "float64",
            ColumnKind::Embedding => "fixed_size_list<float32>",
        }
    }
}

/// A Parquet file opened for streaming, with its columns checked against what the caller needs.
pub struct TableReader {
    path: PathBuf,
    specs: Vec<ColumnSpec>,
    /// For each spec, the column's position in the projected batches (None: absent, optional).
    positions: Vec<Option<usize>>,
    inner: ParquetRecordBatchReader,
    provenance: Option<Provenance>,
    num_rows: u64,
    next_row: u64,
}

impl TableReader {
    /// Opens `path`, checks that every required column of `specs` exists with a compatible
    /// type, and reads only those columns. An empty (zero-row) file is an error.
    pub fn open(path: &Path, table: &'static str, specs: &[ColumnSpec]) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Err(Error::Empty {
                path: path.into(),
                table,
            });
        }
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| Error::NotParquet {
                path: path.into(),
                source,
            })?;
        let arrow_schema = builder.schema().clone();
        let file_meta = builder.metadata().file_metadata();
        let num_rows = file_meta.num_rows() as u64;
        let provenance = file_meta.key_value_metadata().and_then(|kv| {
            Provenance::from_key_values(
                kv.iter()
                    .filter_map(|k| k.value.as_deref().map(|v| (k.key.as_str(), v))),
            )
        });

        let mut roots = Vec::new();
        let mut root_of_spec = Vec::new();
        for spec in specs {
            match arrow_schema.index_of(spec.name) {
                Ok(i) => {
                    let found = arrow_schema.field(i).data_type();
                    if !spec.kind.accepts(found) {
                        return Err(Error::WrongType {
                            path: path.into(),
                            column: spec.name,
                            expected: spec.kind.describe().into(),
                            found: found.to_string(),
                        });
                    }
                    roots.push(i);
                    root_of_spec.push(Some(i));
                }
                Err(_) if spec.optional => root_of_spec.push(None),
                Err(_) => {
                    let found: Vec<&str> = arrow_schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect();
                    return Err(Error::MissingColumn {
                        path: path.into(),
                        table,
                        column: spec.name,
                        found: found.join(", "),
                    });
                }
            }
        }
        if num_rows == 0 {
            return Err(Error::Empty {
                path: path.into(),
                table,
            });
        }
        // Projected batches keep the file's column order, so map each root to its rank.
        let mut sorted = roots.clone();
        sorted.sort_unstable();
        let positions = root_of_spec
            .iter()
            .map(|r| r.map(|r| sorted.binary_search(&r).expect("root is projected")))
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), sorted);
        let inner = builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|source| Error::Parquet {
                path: path.into(),
                source,
            })?;
        Ok(TableReader {
            path: path.into(),
            specs: specs.to_vec(),
            positions,
            inner,
            provenance,
            num_rows,
            next_row: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn num_rows(&self) -> u64 {
        self.num_rows
    }

    /// The producing stage's provenance, if the file was written by this toolkit.
    pub fn provenance(&self) -> Option<&Provenance> {
        self.provenance.as_ref()
    }

    /// The next batch, with columns cast to their canonical types.
    pub fn next_batch(&mut self) -> Result<Option<Batch<'_>>> {
        let Some(batch) = self.inner.next() else {
            return Ok(None);
        };
        let batch = batch.map_err(|source| Error::Arrow {
            path: self.path.clone(),
            source,
        })?;
        let first_row = self.next_row;
        self.next_row += batch.num_rows() as u64;
        let mut columns = Vec::with_capacity(self.specs.len());
        for (spec, pos) in self.specs.iter().zip(&self.positions) {
            columns.push(match pos {
                None => None,
                Some(p) => {
                    let col = batch.column(*p);
                    let target = spec.kind.target(col.data_type());
                    if col.data_type() == &target {
                        Some(col.clone())
                    } else {
                        Some(cast_checked(
                            col, &target, &self.path, spec.name, first_row,
                        )?)
                    }
                }
            });
        }
        Ok(Some(Batch {
            path: &self.path,
            specs: &self.specs,
            first_row,
            len: batch.num_rows(),
            columns,
        }))
    }
}

fn cast_checked(
    col: &ArrayRef,
    target: &DataType,
    path: &Path,
    column: &'static str,
    first_row: u64,
) -> Result<ArrayRef> {
    let cast = arrow::compute::cast(col, target).map_err(|source| Error::Arrow {
        path: path.into(),
        source,
    })?;
    // A value that does not fit (an int64 year of 10^12) casts to null: report it, don't hide it.
    if cast.null_count() > col.null_count() {
        let row = (0..col.len())
            .find(|&i| cast.is_null(i) && !col.is_null(i))
            .expect("a new null exists");
        return Err(Error::BadValue {
            path: path.into(),
            row: first_row + row as u64,
            column,
            reason: format!("value does not fit in {target}"),
        });
    }
    Ok(cast)
}

/// One record batch of a [`TableReader`]; columns are addressed by their schema name (one of
/// the reader's specs).
pub struct Batch<'a> {
    path: &'a Path,
    first_row: u64,
    len: usize,
    specs: &'a [ColumnSpec],
    columns: Vec<Option<ArrayRef>>,
}

impl Batch<'_> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Row number in the file (0-based) of row `i` of this batch.
    pub fn file_row(&self, i: usize) -> u64 {
        self.first_row + i as u64
    }

    /// The position of `column` among the reader's specs.
    ///
    /// # Panics
    /// When `column` is not one of them: the reader asked for a column it never declared.
    fn spec(&self, column: &str) -> usize {
        self.specs
            .iter()
            .position(|s| s.name == column)
            .unwrap_or_else(|| panic!("column {column} is not among the reader's specs"))
    }

    /// The column named `column` (None: an optional column the file lacks).
    pub fn column(&self, column: &str) -> Option<&ArrayRef> {
        self.columns[self.spec(column)].as_ref()
    }

    pub fn bad_value(&self, i: usize, column: &'static str, reason: impl Into<String>) -> Error {
        Error::BadValue {
            path: self.path.into(),
            row: self.file_row(i),
            column,
            reason: reason.into(),
        }
    }

    fn required(&self, column: &str) -> &ArrayRef {
        self.column(column)
            .expect("required columns are checked at open")
    }

    /// A required string column whose values must be non-null and non-blank.
    pub fn text(&self, column: &'static str, i: usize) -> Result<&str> {
        let s = self.opt_str(column, i)?;
        match s {
            None => Err(self.bad_value(i, column, "null value")),
            Some(s) if s.trim().is_empty() => Err(self.bad_value(i, column, "empty text")),
            Some(s) => Ok(s),
        }
    }

    /// A string column that may be null (or absent).
    pub fn opt_str(&self, column: &'static str, i: usize) -> Result<Option<&str>> {
        let Some(col) = self.column(column) else {
            return Ok(None);
        };
        let arr = col.as_any().downcast_ref::<arrow::array::StringArray>();
        let arr = arr.expect("utf8 columns are cast to StringArray");
        Ok((!arr.is_null(i)).then(|| arr.value(i)))
    }

    pub fn i32(&self, column: &'static str, i: usize) -> Result<i32> {
        let arr = self.required(column);
        let arr = arr
            .as_any()
            .downcast_ref::<arrow::array::Int32Array>()
            .expect("int columns are cast to Int32Array");
        if arr.is_null(i) {
            return Err(self.bad_value(i, column, "null value"));
        }
        Ok(arr.value(i))
    }

    pub fn opt_i32(&self, column: &str, i: usize) -> Option<i32> {
        let arr = self.column(column)?;
        let arr = arr.as_any().downcast_ref::<arrow::array::Int32Array>()?;
        (!arr.is_null(i)).then(|| arr.value(i))
    }

    pub fn opt_i64(&self, column: &str, i: usize) -> Option<i64> {
        let arr = self.column(column)?;
        let arr = arr.as_any().downcast_ref::<arrow::array::Int64Array>()?;
        (!arr.is_null(i)).then(|| arr.value(i))
    }

    pub fn opt_f64(&self, column: &str, i: usize) -> Option<f64> {
        let arr = self.column(column)?;
        let arr = arr.as_any().downcast_ref::<arrow::array::Float64Array>()?;
        (!arr.is_null(i)).then(|| arr.value(i))
    }

    pub fn opt_f32(&self, column: &str, i: usize) -> Option<f32> {
        let arr = self.column(column)?;
        let arr = arr.as_any().downcast_ref::<arrow::array::Float32Array>()?;
        (!arr.is_null(i)).then(|| arr.value(i))
    }
}

/// Writes record batches to `dest` atomically (see the module docs).
pub struct TableWriter {
    dest: PathBuf,
    tmp: PathBuf,
    writer: Option<ArrowWriter<File>>,
    schema: SchemaRef,
    rows: u64,
}

impl TableWriter {
    pub fn create(
        dest: &Path,
        schema: SchemaRef,
        table: &str,
        provenance: &Provenance,
    ) -> Result<Self> {
        Self::create_with_row_groups(dest, schema, table, provenance, DEFAULT_ROW_GROUP_ROWS)
    }

    /// As [`Self::create`], with row groups of at most `row_group_rows` rows. The writer holds
    /// one row group in memory, so wide rows (embeddings) want small ones.
    pub fn create_with_row_groups(
        dest: &Path,
        schema: SchemaRef,
        table: &str,
        provenance: &Provenance,
        row_group_rows: usize,
    ) -> Result<Self> {
        let dir = parent_dir(dest);
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tmp = temp_path(dest);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        // Written twice: into the Parquet footer (read by our readers and polars) and into the
        // embedded Arrow schema (what pyarrow and pandas show as `schema.metadata`).
        let kv = provenance.key_values(table);
        let schema = Arc::new(
            schema.as_ref().clone().with_metadata(
                kv.iter()
                    .cloned()
                    .collect::<std::collections::HashMap<_, _>>(),
            ),
        );
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(
                kv.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect(),
            ))
            .set_created_by(format!("strata {}", provenance.version))
            .set_max_row_group_row_count(Some(row_group_rows.max(1)))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|source| {
            Error::Parquet {
                path: dest.into(),
                source,
            }
        })?;
        Ok(TableWriter {
            dest: dest.into(),
            tmp,
            writer: Some(writer),
            schema,
            rows: 0,
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    pub fn write_columns(&mut self, columns: Vec<ArrayRef>) -> Result<()> {
        let batch =
            RecordBatch::try_new(self.schema.clone(), columns).map_err(|source| Error::Arrow {
                path: self.dest.clone(),
                source,
            })?;
        self.write(&batch)
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let writer = self.writer.as_mut().expect("writer open until finish");
        writer.write(batch).map_err(|source| Error::Parquet {
            path: self.dest.clone(),
            source,
        })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes the file, fsyncs it and renames it over the destination. Returns the row count.
    pub fn finish(mut self) -> Result<u64> {
        let writer = self.writer.take().expect("finish is called once");
        let file = writer.into_inner().map_err(|source| Error::Parquet {
            path: self.dest.clone(),
            source,
        })?;
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        commit_rename(&self.tmp, &self.dest)?;
        Ok(self.rows)
    }
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Row count and provenance of a Parquet file, from its footer alone.
pub fn footer_info(path: &Path) -> Result<(u64, Option<Provenance>)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| Error::NotParquet {
            path: path.into(),
            source,
        })?;
    let meta = builder.metadata().file_metadata();
    let provenance = meta.key_value_metadata().and_then(|kv| {
        Provenance::from_key_values(
            kv.iter()
                .filter_map(|k| k.value.as_deref().map(|v| (k.key.as_str(), v))),
        )
    });
    Ok((meta.num_rows() as u64, provenance))
}

pub(crate) fn string_array<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(arrow::array::StringArray::from_iter(values))
}
