//! A corpus as stages take it: a `chunks` Parquet file or a chunk-file layout, streamed in batches.

use std::path::PathBuf;

use crate::chunk_files::{read_chunk_files, ChunkFileLayout, ChunkFilesReport};
use crate::error::Result;
use crate::provenance::{sha256_file, Provenance};
use crate::tables::{ChunkRow, ChunksReader};

#[derive(Debug, Clone)]
pub enum Corpus {
    Chunks(PathBuf),
    ChunkFiles(ChunkFileLayout),
}

impl Corpus {
    /// Calls `f` with consecutive batches of about `batch_rows` chunks, in corpus order. For a
    /// chunk-file layout, returns its import report (skipped lines, missing files).
    /// Errors of `f` (any type that `common`'s errors convert into) stop the reading.
    pub fn for_each_batch<E: From<crate::Error>>(
        &self,
        batch_rows: usize,
        mut f: impl FnMut(Vec<ChunkRow>) -> std::result::Result<(), E>,
    ) -> std::result::Result<Option<ChunkFilesReport>, E> {
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
            Corpus::ChunkFiles(layout) => {
                let mut buf = Vec::new();
                let report = read_chunk_files::<E>(layout, |doc| {
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
    /// `chunks` Parquet file.
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
