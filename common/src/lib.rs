//! What every pipeline stage shares: the tables they exchange and how they are read and
//! written, atomic writes, the chunk-files import, manifests, provenance, progress, and text
//! files read past a byte-order mark. The encoder lives in its own crate (`encoder`), so
//! stages without a model never compile candle.

pub mod atomic;
pub mod chunk_files;
pub mod corpus;
pub mod error;
pub mod manifest;
pub mod parquet_io;
pub mod perf;
pub mod progress;
pub mod provenance;
pub mod schema;
pub mod split;
pub mod tables;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod text;

pub use error::{Error, Result};
