//! Exports of a finished shard for tools that do not read Parquet: the reference layout's TSV
//! (`paperId, chunknumber, embedding_1 … embedding_D`) and a float32 `.npy` matrix with an ids
//! Parquet beside it. Both are written to a temp file and renamed.
//!
//! The TSV must read back to the same rows whatever a doc_id holds: fields are quoted as RFC
//! 4180 does with a TAB delimiter (a field holding a TAB, CR, LF or `"` goes in double quotes,
//! `"` doubled), which pandas' `read_csv(sep="\t")`, Python's `csv` module and R's `read.delim`
//! read; ids without those characters are written as before.

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use common::atomic::{commit_rename, temp_path};
use common::parquet_io::TableWriter;
use common::provenance::Provenance;
use common::tables::EmbeddingsReader;
use common::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
pub enum Format {
    /// `{shard}.tsv`: paperId, chunknumber, embedding_1 … embedding_D.
    Tsv,
    /// `{shard}.npy` (float32, rows × dim) and `{shard}.ids.parquet` (doc_id, chunk_idx, year).
    Npy,
}

/// Writes the exports of `shard_file` (an `embeddings` Parquet file); returns the files written.
pub fn export(shard_file: &Path, format: Format, provenance: &Provenance) -> Result<Vec<PathBuf>> {
    match format {
        Format::Tsv => Ok(vec![tsv(shard_file)?]),
        Format::Npy => npy(shard_file, provenance),
    }
}

fn with_temp<T>(
    dest: &Path,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> Result<T>,
) -> Result<T> {
    let tmp = temp_path(dest);
    let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut out = BufWriter::new(file);
    let result = write(&mut out).and_then(|v| {
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        Ok(v)
    });
    match result {
        Ok(v) => {
            commit_rename(&tmp, dest)?;
            Ok(v)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// The TSV dialect of the export (and of anything reading it back): TAB-delimited, `\n`
/// records, RFC 4180 quotes only where a field needs them.
pub fn tsv_writer<W: Write>(out: W) -> csv::Writer<W> {
    csv::WriterBuilder::new()
        .delimiter(b'\t')
        .terminator(csv::Terminator::Any(b'\n'))
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(out)
}

fn tsv(shard_file: &Path) -> Result<PathBuf> {
    let dest = shard_file.with_extension("tsv");
    let mut reader = EmbeddingsReader::open(shard_file)?;
    with_temp(&dest, |out| {
        let csv_err = |e: csv::Error| match e.into_kind() {
            csv::ErrorKind::Io(e) => Error::io(&dest, e),
            other => Error::Invalid(format!("{}: {other:?}", dest.display())),
        };
        let mut w = tsv_writer(out);
        let mut header_written = false;
        let mut field = String::new();
        while let Some((keys, matrix)) = reader.next_rows()? {
            let dim = matrix.len() / keys.len().max(1);
            if !header_written {
                w.write_field("paperId").map_err(csv_err)?;
                w.write_field("chunknumber").map_err(csv_err)?;
                for d in 1..=dim {
                    w.write_field(format!("embedding_{d}")).map_err(csv_err)?;
                }
                w.write_record(None::<&[u8]>).map_err(csv_err)?;
                header_written = true;
            }
            for (k, row) in keys.iter().zip(matrix.chunks(dim)) {
                w.write_field(&k.doc_id).map_err(csv_err)?;
                field.clear();
                write!(field, "{}", k.chunk_idx).expect("write to String");
                w.write_field(&field).map_err(csv_err)?;
                for v in row {
                    // Display prints the shortest text that parses back to the same f32.
                    field.clear();
                    write!(field, "{v}").expect("write to String");
                    w.write_field(&field).map_err(csv_err)?;
                }
                w.write_record(None::<&[u8]>).map_err(csv_err)?;
            }
        }
        w.flush().map_err(|e| Error::io(&dest, e))?;
        Ok(())
    })?;
    Ok(dest)
}

fn npy(shard_file: &Path, provenance: &Provenance) -> Result<Vec<PathBuf>> {
    let dest = shard_file.with_extension("npy");
    let ids_dest = shard_file.with_extension("ids.parquet");
    let mut reader = EmbeddingsReader::open(shard_file)?;
    let rows = reader.num_rows();
    let mut ids = TableWriter::create(
        &ids_dest,
        common::schema::ids_schema(),
        common::schema::ids::TABLE,
        provenance,
    )?;
    with_temp(&dest, |out| {
        let io = |e| Error::io(&dest, e);
        let mut header_written = false;
        while let Some((keys, matrix)) = reader.next_rows()? {
            let dim = matrix.len() / keys.len().max(1);
            if !header_written {
                out.write_all(&npy_header(rows, dim)).map_err(io)?;
                header_written = true;
            }
            for v in &matrix {
                out.write_all(&v.to_le_bytes()).map_err(io)?;
            }
            ids.write_columns(common::tables::key_columns(&keys))?;
        }
        Ok(())
    })?;
    ids.finish()?;
    Ok(vec![dest, ids_dest])
}

/// NPY format 1.0 header for a C-order little-endian float32 matrix, padded to 64 bytes.
fn npy_header(rows: u64, dim: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    let unpadded = 10 + dict.len() + 1;
    let padding = (64 - unpadded % 64) % 64;
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    header.extend(((dict.len() + padding + 1) as u16).to_le_bytes());
    header.extend(dict.as_bytes());
    header.extend(std::iter::repeat_n(b' ', padding));
    header.push(b'\n');
    header
}
