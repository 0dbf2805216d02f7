//! What the pipeline stages share: the tables they exchange and how they are read and written,
//! the seed-layout import, manifests, and the sentence encoder used for both training and
//! inference.

pub mod alloc;
pub mod corpus;
pub mod error;
pub mod manifest;
pub mod model;
pub mod parquet_io;
pub mod perf;
pub mod progress;
pub mod provenance;
pub mod schema;
pub mod seed_layout;
pub mod tables;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod text;
pub mod train;

pub use error::{Error, Result};
