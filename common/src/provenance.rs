//! Where a file came from: the producing stage, its version, its parameters and the sha256 of
//! every input. Written into each Parquet file's key-value metadata and into manifests, so an
//! output can be traced (and a resumed run can check it is continuing the same job).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::schema::meta;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputHash {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub stage: String,
    pub version: String,
    pub parameters: serde_json::Value,
    pub inputs: Vec<InputHash>,
}

impl Provenance {
    pub fn new(stage: &str, version: &str, parameters: serde_json::Value) -> Self {
        Provenance {
            stage: stage.to_string(),
            version: version.to_string(),
            parameters,
            inputs: Vec::new(),
        }
    }

    /// Hashes `path` and records it as an input.
    pub fn with_input(mut self, path: &Path) -> Result<Self> {
        self.inputs.push(InputHash {
            path: path.display().to_string(),
            sha256: sha256_file(path)?,
        });
        Ok(self)
    }

    pub fn with_input_hash(mut self, path: impl Into<String>, sha256: impl Into<String>) -> Self {
        self.inputs.push(InputHash {
            path: path.into(),
            sha256: sha256.into(),
        });
        self
    }

    /// The key-value pairs written into a Parquet footer.
    pub fn key_values(&self, table: &str) -> Vec<(String, String)> {
        vec![
            (meta::TABLE.into(), table.into()),
            (meta::STAGE.into(), self.stage.clone()),
            (meta::VERSION.into(), self.version.clone()),
            (meta::PARAMETERS.into(), self.parameters.to_string()),
            (
                meta::INPUTS.into(),
                serde_json::to_string(&self.inputs).expect("inputs serialize"),
            ),
        ]
    }

    /// Reads provenance back from a footer's key-value pairs; `None` when the file was not
    /// written by this toolkit.
    pub fn from_key_values<'a>(kv: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Self> {
        let (mut stage, mut version, mut params, mut inputs) = (None, None, None, None);
        for (k, v) in kv {
            match k {
                meta::STAGE => stage = Some(v.to_string()),
                meta::VERSION => version = Some(v.to_string()),
                meta::PARAMETERS => params = serde_json::from_str(v).ok(),
                meta::INPUTS => inputs = serde_json::from_str(v).ok(),
                _ => {}
            }
        }
        Some(Provenance {
            stage: stage?,
            version: version?,
            parameters: params.unwrap_or(serde_json::Value::Null),
            inputs: inputs.unwrap_or_default(),
        })
    }
}

/// Hex sha256 of bytes.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hex sha256 of a file, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// sha256 over several files in a stable order (e.g. a chunk-file layout's chunk files), each file's
/// relative name hashed along with its content so renames change the digest.
pub fn sha256_files(root: &Path, files: &[PathBuf]) -> Result<String> {
    let mut sorted: Vec<&PathBuf> = files.iter().collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    for f in sorted {
        let rel = f.strip_prefix(root).unwrap_or(f);
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0u8]);
        hasher.update(sha256_file(f)?.as_bytes());
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Refuses a secret file (an API key) that users other than its owner can read.
pub fn check_private_file(path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        ));
    }
    Ok(())
}
