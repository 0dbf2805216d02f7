//! One error type for everything `common` does (the encoder has its own). Every variant about data names the file, and
//! where it can the column and the row, so a user can go straight to the bad input.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a readable Parquet file: {source}")]
    NotParquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: Parquet error: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: Arrow error: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("{path}: the file is empty (no rows); a `{table}` table needs at least one")]
    Empty { path: PathBuf, table: &'static str },
    #[error("{path}: missing column `{column}` required by the `{table}` table (found: {found})")]
    MissingColumn {
        path: PathBuf,
        table: &'static str,
        column: &'static str,
        found: String,
    },
    #[error("{path}: column `{column}` has type {found}, expected {expected}")]
    WrongType {
        path: PathBuf,
        column: &'static str,
        expected: String,
        found: String,
    },
    #[error("{path}: row {row}: column `{column}`: {reason}")]
    BadValue {
        path: PathBuf,
        row: u64,
        column: &'static str,
        reason: String,
    },
    #[error("{path}:{line}: {reason}")]
    BadLine {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the error is the user's input being wrong (exit code 2) rather than a failure of
    /// the machine or of the tool (exit code 1).
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Error::Io { .. })
    }
}
