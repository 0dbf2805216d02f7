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

/// The command-line flags that name a corpus, shared by the stages that read one.
#[derive(Debug, Clone, clap::Args)]
pub struct CorpusArgs {
    /// `chunks` Parquet file.
    #[arg(
        long,
        conflicts_with = "seed_dir",
        required_unless_present = "seed_dir"
    )]
    pub chunks: Option<PathBuf>,
    /// Seed layout folder instead: metadata TSV + chunks/{id}.txt (see --metadata, --chunks-dir).
    #[arg(long)]
    pub seed_dir: Option<PathBuf>,
    /// Metadata TSV of the seed layout [default: SEED_DIR/metadata.tsv].
    #[arg(long, requires = "seed_dir")]
    pub metadata: Option<PathBuf>,
    /// Folder of {id}.txt chunk files [default: SEED_DIR/chunks].
    #[arg(long, requires = "seed_dir")]
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
        match (&self.chunks, &self.seed_dir) {
            (Some(path), _) => Corpus::Chunks(path.clone()),
            (None, dir) => {
                let mut layout =
                    SeedLayout::in_dir(dir.as_deref().unwrap_or(std::path::Path::new(".")));
                layout.metadata = self.metadata.clone().unwrap_or(layout.metadata);
                layout.chunks_dir = self.chunks_dir.clone().unwrap_or(layout.chunks_dir);
                layout.id_column = self.id_column.clone();
                layout.year_column = self.year_column.clone();
                Corpus::Seed(layout)
            }
        }
    }
}
