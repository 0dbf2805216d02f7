//! `MANIFEST.json` in every output directory: for each file the stages wrote, its path relative
//! to the directory, size, sha256, row count and producing stage + parameters. Stages record
//! their outputs here however they were run (laptop, sbatch, array task), so a directory can be
//! copied between clusters and checked with [`verify`].
//!
//! Several array tasks may finish into one directory at once, so updates take an exclusive
//! lock on a sibling lock file and replace the manifest atomically.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::provenance::{sha256_file, Provenance};

pub const MANIFEST: &str = "MANIFEST.json";
const LOCK: &str = ".MANIFEST.lock";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub size: u64,
    pub sha256: String,
    /// Rows, for Parquet tables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    pub stage: String,
    pub version: String,
    pub parameters: serde_json::Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Relative path (with `/`) → entry.
    pub files: BTreeMap<String, Entry>,
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| Error::Json { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

/// Records `file` (inside `dir`) in `dir/MANIFEST.json`, replacing any earlier entry for it.
pub fn record(dir: &Path, file: &Path, rows: Option<u64>, provenance: &Provenance) -> Result<()> {
    let rel = file.strip_prefix(dir).map_err(|_| {
        Error::Invalid(format!(
            "{} is not inside output directory {}",
            file.display(),
            dir.display()
        ))
    })?;
    let rel = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    let meta = std::fs::metadata(file).map_err(|e| Error::io(file, e))?;
    let entry = Entry {
        size: meta.len(),
        sha256: sha256_file(file)?,
        rows,
        stage: provenance.stage.clone(),
        version: provenance.version.clone(),
        parameters: provenance.parameters.clone(),
    };
    let _lock = crate::atomic::lock_file(&dir.join(LOCK))?;
    let mut manifest = Manifest::load(dir)?;
    manifest.files.insert(rel, entry);
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    write_atomic(&dir.join(MANIFEST), &json)
}

/// Records `file` in the MANIFEST.json of the folder it is in.
pub fn record_beside(file: &Path, rows: Option<u64>, provenance: &Provenance) -> Result<()> {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // `record` needs `file` inside `dir` as written, so a bare file name gets "./".
    record(
        dir,
        &dir.join(file.file_name().unwrap_or_default()),
        rows,
        provenance,
    )
}

/// What is wrong with one file of a manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Finding {
    Missing {
        path: String,
    },
    SizeChanged {
        path: String,
        expected: u64,
        found: u64,
    },
    ContentChanged {
        path: String,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Missing { path } => write!(f, "{path}: missing"),
            Finding::SizeChanged {
                path,
                expected,
                found,
            } => {
                let what = if found < expected {
                    "truncated"
                } else {
                    "size changed"
                };
                write!(
                    f,
                    "{path}: {what} ({found} bytes, manifest says {expected})"
                )
            }
            Finding::ContentChanged { path } => {
                write!(f, "{path}: content changed (sha256 differs)")
            }
        }
    }
}

/// Checks every file listed in `dir/MANIFEST.json`; an empty list means all is intact.
pub fn verify(dir: &Path) -> Result<Vec<Finding>> {
    let manifest_path = dir.join(MANIFEST);
    if !manifest_path.exists() {
        return Err(Error::Invalid(format!(
            "{}: no manifest",
            manifest_path.display()
        )));
    }
    let manifest = Manifest::load(dir)?;
    let mut findings = Vec::new();
    for (rel, entry) in &manifest.files {
        let path = dir.join(rel);
        let Ok(meta) = std::fs::metadata(&path) else {
            findings.push(Finding::Missing { path: rel.clone() });
            continue;
        };
        if meta.len() != entry.size {
            findings.push(Finding::SizeChanged {
                path: rel.clone(),
                expected: entry.size,
                found: meta.len(),
            });
        } else if sha256_file(&path)? != entry.sha256 {
            findings.push(Finding::ContentChanged { path: rel.clone() });
        }
    }
    Ok(findings)
}
