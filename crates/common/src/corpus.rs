//! A corpus as stages take it: a `chunks` Parquet file or a seed layout, streamed in batches.

use std::path::PathBuf;

use crate::error::Result;
use crate::provenance::{sha256_file, Provenance};
use crate::seed_layout::{read_seed, SeedLayout, SeedReport};
use crate::tables::{ChunkRow, ChunksReader};

#[derive(Debug, Clone)]
pub enum Corpus {
    Chunks(PathBuf),
    Seed(SeedLayout),
}

impl Corpus {
    /// Calls `f` with consecutive batches of about `batch_rows` chunks, in corpus order. For a
    /// seed layout, returns its import report (skipped lines, missing files).
    pub fn for_each_batch(
        &self,
        batch_rows: usize,
        mut f: impl FnMut(Vec<ChunkRow>) -> Result<()>,
    ) -> Result<Option<SeedReport>> {
        match self {
            Corpus::Chunks(path) => {
                let mut reader = ChunksReader::open(path)?;
                let mut buf = Vec::new();
                while let Some(rows) = reader.next_rows()? {
                    buf.extend(rows);
                    if buf.len() >= batch_rows {
                        f(std::mem::take(&mut buf))?;
                    }
                }
                if !buf.is_empty() {
                    f(buf)?;
                }
                Ok(None)
            }
            Corpus::Seed(layout) => {
                let mut buf = Vec::new();
                let report = read_seed(layout, |doc| {
                    buf.extend(doc);
                    if buf.len() >= batch_rows {
                        f(std::mem::take(&mut buf))?;
                    }
                    Ok(())
                })?;
                if !buf.is_empty() {
                    f(buf)?;
                }
                Ok(Some(report))
            }
        }
    }

    /// Number of chunks when it is known without reading the corpus (Parquet footer).
    pub fn known_rows(&self) -> Option<u64> {
        match self {
            Corpus::Chunks(path) => ChunksReader::open(path).ok().map(|r| r.num_rows()),
            Corpus::Seed(_) => None,
        }
    }

    /// Records the corpus' identity (sha256 of the Parquet file or of the metadata TSV).
    pub fn add_to(&self, provenance: Provenance) -> Result<Provenance> {
        let path = match self {
            Corpus::Chunks(path) => path,
            Corpus::Seed(layout) => &layout.metadata,
        };
        Ok(provenance.with_input_hash(path.display().to_string(), sha256_file(path)?))
    }
}
