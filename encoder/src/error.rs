//! The encoder's error type. Variants about a model name its folder or file, so a user can go
//! straight to what is wrong; table and file errors from `common` pass through.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing files, tables and manifests (`common`'s errors name file and row).
    #[error(transparent)]
    Common(#[from] common::Error),
    #[error("model folder {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Common(common::Error::io(path, source))
    }

    pub fn model(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Whether the error is the user's input being wrong (exit code 2) rather than a failure of
    /// the machine or of the tool (exit code 1).
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Common(e) => e.is_bad_input(),
            Error::Candle(_) => false,
            _ => true,
        }
    }
}
