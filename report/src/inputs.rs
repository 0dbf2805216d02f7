//! What a run folder holds: each stage's output where the pipeline (`slurm run-local` /
//! `slurm submit`) puts it, every one optional.

use std::path::{Path, PathBuf};

use common::manifest::Manifest;

use crate::{Error, Options, Result};

/// select-pairs' output, relative to the run folder.
pub const PAIRS: &str = "pairs/pairs.parquet";
/// select-pairs' `--report` JSON.
pub const PAIRS_REPORT: &str = "pairs/report.json";
/// paraphrase-gen's output.
pub const PAIRS_FILLED: &str = "pairs-filled/pairs.parquet";
/// tune-embeddings' output folder (sentence-transformers layout + metrics.jsonl).
pub const MODEL: &str = "model";
/// apply-model's output folder (`<shard>.parquet`).
pub const EMBEDDINGS: &str = "embeddings";
/// precocity's document table.
pub const PRECOCITY_DOCUMENTS: &str = "precocity/documents.parquet";
/// precocity's chunk table.
pub const PRECOCITY_CHUNKS: &str = "precocity/chunks.parquet";

/// The stage outputs found in a run folder, as paths that exist.
#[derive(Debug, Clone, Default)]
pub struct RunInputs {
    pub run_dir: PathBuf,
    pub corpus: Option<PathBuf>,
    pub base_model: Option<PathBuf>,
    pub pairs: Option<PathBuf>,
    pub pairs_report: Option<PathBuf>,
    pub pairs_filled: Option<PathBuf>,
    /// The tuned model folder, when it has its `metrics.jsonl`.
    pub model: Option<PathBuf>,
    /// Embedding shards, sorted by file name.
    pub embeddings: Vec<PathBuf>,
    /// (documents.parquet, chunks.parquet).
    pub precocity: Option<(PathBuf, PathBuf)>,
    /// Each stage folder's MANIFEST.json: (folder, stage, version), sorted by folder.
    pub stages: Vec<(String, String, String)>,
}

impl RunInputs {
    /// Looks for every stage's output under `opts.run_dir`. Missing outputs are `None`; a
    /// `--corpus` or `--base-model` that was named but does not exist is an error.
    pub fn discover(opts: &Options) -> Result<RunInputs> {
        let dir = &opts.run_dir;
        if !dir.is_dir() {
            return Err(Error::input(dir, "run folder not found"));
        }
        let existing = |rel: &str| Some(dir.join(rel)).filter(|p| p.is_file());
        for (given, what) in [
            (&opts.corpus, "--corpus"),
            (&opts.base_model, "--base-model"),
        ] {
            if let Some(p) = given.as_ref().filter(|p| !p.exists()) {
                return Err(Error::input(p, format!("{what} not found")));
            }
        }
        let model = Some(dir.join(MODEL)).filter(|p| p.join("metrics.jsonl").is_file());
        let mut embeddings = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir.join(EMBEDDINGS)) {
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                // apply-model's shards; its `.npy` exports come with an `*.ids.parquet` of keys.
                if path.is_file()
                    && name.ends_with(".parquet")
                    && !name.starts_with('.')
                    && !name.ends_with(".ids.parquet")
                {
                    embeddings.push(path);
                }
            }
        }
        embeddings.sort();
        let precocity = existing(PRECOCITY_DOCUMENTS).zip(existing(PRECOCITY_CHUNKS));
        Ok(RunInputs {
            run_dir: dir.clone(),
            corpus: opts.corpus.clone(),
            // Without --base-model: the one the tuned model was trained from, if it is here.
            base_model: opts.base_model.clone().or_else(|| {
                model
                    .as_deref()
                    .and_then(|m| crate::training::base_model_of(dir, m))
            }),
            pairs: existing(PAIRS),
            pairs_report: existing(PAIRS_REPORT),
            pairs_filled: existing(PAIRS_FILLED),
            model,
            embeddings,
            precocity,
            stages: stage_manifests(dir)?,
        })
    }

    /// `path` relative to the run folder where it is inside it (for notes and provenance).
    pub fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.run_dir)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// (folder, stage, version) of every `*/MANIFEST.json` directly under the run folder.
fn stage_manifests(dir: &Path) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for entry in entries.flatten() {
        let sub = entry.path();
        if !sub.join(common::manifest::MANIFEST).is_file() {
            continue;
        }
        let manifest = Manifest::load(&sub)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut seen: Vec<(String, String)> = manifest
            .files
            .values()
            // An earlier report written into the run folder is not an input of this one.
            .filter(|e| e.stage != crate::STAGE)
            .map(|e| (e.stage.clone(), e.version.clone()))
            .collect();
        seen.sort();
        seen.dedup();
        for (stage, version) in seen {
            out.push((name.clone(), stage, version));
        }
    }
    out.sort();
    Ok(out)
}
