//! The stage's tables: per-chunk measures (one committed part per centre year, then
//! `chunks.parquet`) and the per-document table (`documents.parquet` and the reference's
//! `documents.tsv`). Column names come from `common::schema`.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int32Array, StringArray};
use common::atomic::{commit_rename, temp_path};
use common::parquet_io::{ColumnKind, ColumnSpec, TableReader, TableWriter};
use common::provenance::Provenance;
use common::schema;
use common::{Error, Result};

use crate::Grid;

/// One row of the chunk table.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkMeasure {
    pub doc_id: String,
    pub chunk_idx: i32,
    pub year: i32,
    pub fraction: f64,
    pub filter: String,
    pub radius: i32,
    /// None where undefined (no comparison chunk on one side).
    pub precocity: Option<f64>,
    pub novelty: Option<f64>,
    pub transience: Option<f64>,
}

/// One row of the document table.
#[derive(Debug, Clone, PartialEq)]
pub struct DocMeasure {
    pub docid: String,
    pub date: i32,
    pub num_chunks: i32,
    pub fraction: f64,
    pub filter: String,
    pub radius: i32,
    pub chunks_used: f64,
    pub precocity: Option<f64>,
    pub novelty: Option<f64>,
    pub transience: Option<f64>,
}

fn defined(x: f64) -> Option<f64> {
    (!x.is_nan()).then_some(x)
}

/// Rows for one chunk from its `[fraction][filter][radius]` (precocity, novelty, transience).
pub fn chunk_rows(
    doc: &str,
    chunk_idx: i32,
    year: i32,
    grid: &Grid,
    measures: &[[f64; 3]],
    out: &mut Vec<ChunkMeasure>,
) {
    for (f, &fraction) in grid.fractions.iter().enumerate() {
        for (fi, filter) in grid.filters.iter().enumerate() {
            for (ri, &radius) in grid.radii.iter().enumerate() {
                let [p, n, t] = measures[crate::engine::measure_index(grid, f, fi, ri)];
                out.push(ChunkMeasure {
                    doc_id: doc.to_string(),
                    chunk_idx,
                    year,
                    fraction,
                    filter: filter.as_str().to_string(),
                    radius: radius as i32,
                    precocity: defined(p),
                    novelty: defined(n),
                    transience: defined(t),
                });
            }
        }
    }
}

fn strings<'a>(v: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}

fn floats(v: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from_iter(v))
}

fn ints(v: impl Iterator<Item = i32>) -> ArrayRef {
    Arc::new(Int32Array::from_iter_values(v))
}

/// Streams chunk rows into a `precocity_chunks` table (atomic on `finish`).
pub struct ChunkWriter(TableWriter);

impl ChunkWriter {
    pub fn create(path: &Path, provenance: &Provenance) -> Result<Self> {
        TableWriter::create(
            path,
            schema::precocity_chunks_schema(),
            schema::precocity_chunks::TABLE,
            provenance,
        )
        .map(ChunkWriter)
    }

    pub fn write(&mut self, rows: &[ChunkMeasure]) -> Result<()> {
        for rows in rows.chunks(common::parquet_io::BATCH_ROWS) {
            self.0.write_columns(vec![
                strings(rows.iter().map(|r| r.doc_id.as_str())),
                ints(rows.iter().map(|r| r.chunk_idx)),
                ints(rows.iter().map(|r| r.year)),
                floats(rows.iter().map(|r| Some(r.fraction))),
                strings(rows.iter().map(|r| r.filter.as_str())),
                ints(rows.iter().map(|r| r.radius)),
                floats(rows.iter().map(|r| r.precocity)),
                floats(rows.iter().map(|r| r.novelty)),
                floats(rows.iter().map(|r| r.transience)),
            ])?;
        }
        Ok(())
    }

    pub fn finish(self) -> Result<u64> {
        self.0.finish()
    }
}

/// Reads a `precocity_chunks` table (a year's part) whole.
pub fn read_chunks(path: &Path) -> Result<Vec<ChunkMeasure>> {
    use schema::precocity_chunks::*;
    let spec = |name, kind, optional| ColumnSpec {
        name,
        kind,
        optional,
    };
    let specs = [
        spec(DOC_ID, ColumnKind::Utf8, false),
        spec(CHUNK_IDX, ColumnKind::Int32, false),
        spec(YEAR, ColumnKind::Int32, false),
        spec(FRACTION_COMPARED, ColumnKind::Float64, false),
        spec(FILTERED, ColumnKind::Utf8, false),
        spec(TIME_RADIUS, ColumnKind::Int32, false),
        spec(PRECOCITY, ColumnKind::Float64, false),
        spec(NOVELTY, ColumnKind::Float64, false),
        spec(TRANSIENCE, ColumnKind::Float64, false),
    ];
    let mut reader = TableReader::open(path, TABLE, &specs)?;
    let mut out = Vec::with_capacity(reader.num_rows() as usize);
    while let Some(b) = reader.next_batch()? {
        for i in 0..b.len() {
            out.push(ChunkMeasure {
                doc_id: b.text(DOC_ID, i)?.to_string(),
                chunk_idx: b.i32(CHUNK_IDX, i)?,
                year: b.i32(YEAR, i)?,
                fraction: b
                    .opt_f64(FRACTION_COMPARED, i)
                    .ok_or_else(|| b.bad_value(i, FRACTION_COMPARED, "null value"))?,
                filter: b.text(FILTERED, i)?.to_string(),
                radius: b.i32(TIME_RADIUS, i)?,
                precocity: b.opt_f64(PRECOCITY, i),
                novelty: b.opt_f64(NOVELTY, i),
                transience: b.opt_f64(TRANSIENCE, i),
            });
        }
    }
    Ok(out)
}

/// The document rows of one year's chunk rows (grouped by document, each document's rows in
/// `[fraction][filter][radius]` order per chunk, as [`chunk_rows`] writes them): for each
/// (fraction, filter, radius) the document's chunks are sorted by precocity (then novelty,
/// then transience, descending, as the reference sorts its tuples) and the measures averaged
/// over the top ⌈a·n⌉ for each aggregate a. Undefined when the chunks' measures are.
pub fn aggregate(rows: &[ChunkMeasure], grid: &Grid) -> Vec<DocMeasure> {
    let per_chunk = grid.fractions.len() * grid.filters.len() * grid.radii.len();
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let doc = &rows[start].doc_id;
        let end = start
            + rows[start..]
                .iter()
                .take_while(|r| &r.doc_id == doc)
                .count();
        let chunks = &rows[start..end];
        let n = chunks.len() / per_chunk;
        for cell in 0..per_chunk {
            let first = &chunks[cell];
            let mut triples: Vec<[f64; 3]> = (0..n)
                .map(|c| &chunks[c * per_chunk + cell])
                .filter_map(|r| Some([r.precocity?, r.novelty?, r.transience?]))
                .collect();
            triples.sort_by(|a, b| {
                b[0].total_cmp(&a[0])
                    .then(b[1].total_cmp(&a[1]))
                    .then(b[2].total_cmp(&a[2]))
            });
            for &a in &grid.aggregates {
                let k = (triples.len() as f64 * a).ceil() as usize;
                let k = k.clamp(1, triples.len().max(1)).min(triples.len());
                let mean = |j: usize| {
                    (k > 0).then(|| triples[..k].iter().map(|t| t[j]).sum::<f64>() / k as f64)
                };
                out.push(DocMeasure {
                    docid: doc.clone(),
                    date: first.year,
                    num_chunks: n as i32,
                    fraction: first.fraction,
                    filter: first.filter.clone(),
                    radius: first.radius,
                    chunks_used: a,
                    precocity: mean(0),
                    novelty: mean(1),
                    transience: mean(2),
                });
            }
        }
        start = end;
    }
    out
}

/// Streams document rows into `documents.parquet` and `documents.tsv` (both atomic).
pub struct DocWriter {
    parquet: Option<TableWriter>,
    tsv_tmp: std::path::PathBuf,
    tsv_dest: std::path::PathBuf,
    tsv: Option<std::io::BufWriter<std::fs::File>>,
}

impl DocWriter {
    pub fn create(parquet: &Path, tsv: &Path, provenance: &Provenance) -> Result<Self> {
        let writer = TableWriter::create(
            parquet,
            schema::precocity_documents_schema(),
            schema::precocity_documents::TABLE,
            provenance,
        )?;
        let tmp = temp_path(tsv);
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut out = std::io::BufWriter::new(file);
        use schema::precocity_documents::*;
        let header = [
            DOCID,
            DATE,
            NUM_CHUNKS,
            FRACTION_COMPARED,
            FILTERED,
            TIME_RADIUS,
            CHUNKS_USED,
            PRECOCITY,
            NOVELTY,
            TRANSIENCE,
        ];
        writeln!(out, "{}", header.join("\t")).map_err(|e| Error::io(&tmp, e))?;
        Ok(DocWriter {
            parquet: Some(writer),
            tsv_tmp: tmp,
            tsv_dest: tsv.into(),
            tsv: Some(out),
        })
    }

    pub fn write(&mut self, rows: &[DocMeasure]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let parquet = self.parquet.as_mut().expect("open until finish");
        parquet.write_columns(vec![
            strings(rows.iter().map(|r| r.docid.as_str())),
            ints(rows.iter().map(|r| r.date)),
            ints(rows.iter().map(|r| r.num_chunks)),
            floats(rows.iter().map(|r| Some(r.fraction))),
            strings(rows.iter().map(|r| r.filter.as_str())),
            ints(rows.iter().map(|r| r.radius)),
            floats(rows.iter().map(|r| Some(r.chunks_used))),
            floats(rows.iter().map(|r| r.precocity)),
            floats(rows.iter().map(|r| r.novelty)),
            floats(rows.iter().map(|r| r.transience)),
        ])?;
        let out = self.tsv.as_mut().expect("open until finish");
        // Python's float formatting (`1.0`, `0.05`, `nan`), as the reference's str(x) writes.
        let num = |x: Option<f64>| x.map_or("nan".to_string(), |x| format!("{x:?}"));
        for r in rows {
            writeln!(
                out,
                "{}\t{}\t{}\t{:?}\t{}\t{}\t{:?}\t{}\t{}\t{}",
                r.docid,
                r.date,
                r.num_chunks,
                r.fraction,
                r.filter,
                r.radius,
                r.chunks_used,
                num(r.precocity),
                num(r.novelty),
                num(r.transience)
            )
            .map_err(|e| Error::io(&self.tsv_tmp, e))?;
        }
        Ok(())
    }

    /// Commits both files; returns the row count.
    pub fn finish(mut self) -> Result<u64> {
        let out = self.tsv.take().expect("finish once");
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&self.tsv_tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.tsv_tmp, e))?;
        drop(file);
        let rows = self.parquet.take().expect("finish once").finish()?;
        commit_rename(&self.tsv_tmp, &self.tsv_dest)?;
        Ok(rows)
    }
}

impl Drop for DocWriter {
    fn drop(&mut self) {
        if self.tsv.is_some() {
            let _ = std::fs::remove_file(&self.tsv_tmp);
        }
    }
}
