//! slurm: one pipeline config → the stages run on this machine, or as chained sbatch jobs
//! (select-pairs → [paraphrase-gen] → tune-embeddings → apply-model array → [precocity] →
//! [report], each `afterok` the one before). A stage is finished when its output folder's MANIFEST.json lists what the
//! stage must produce and every listed file verifies; resubmitting skips finished stages and
//! reuses jobs still queued or running.

pub mod cluster;
pub mod config;
pub mod stages;
pub mod sync;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::manifest::{self, Manifest};
use serde::{Deserialize, Serialize};

use config::Config;
use stages::{sbatch_script, script_path, stage_profile, stages, Stage};

pub type Result<T> = std::result::Result<T, String>;

const STATE: &str = "slurm/state.json";

/// Job ids of the last submission, by stage name.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SubmitState {
    pub jobs: BTreeMap<String, String>,
}

fn load_state(run: &Path) -> SubmitState {
    std::fs::read(run.join(STATE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_state(run: &Path, state: &SubmitState) -> Result<()> {
    let json = serde_json::to_vec_pretty(state).expect("state serializes");
    common::atomic::write_atomic(&run.join(STATE), &json).map_err(|e| e.to_string())
}

/// The files a finished stage must have listed in its manifest.
fn expected_outputs(config: &Config, stage: Stage) -> Result<Vec<String>> {
    Ok(match stage {
        Stage::SelectPairs | Stage::ParaphraseGen => vec!["pairs.parquet".into()],
        Stage::TuneEmbeddings => vec![
            "model.safetensors".into(),
            "config.json".into(),
            "modules.json".into(),
        ],
        Stage::ApplyModel => {
            // apply-model itself says which shards its arguments make.
            let mut cmd = stages::command(config, None, Stage::ApplyModel);
            cmd.push("--list-shards".into());
            let out = std::process::Command::new(&cmd[0])
                .args(&cmd[1..])
                .current_dir(&config.run_dir)
                .env_remove("SLURM_ARRAY_TASK_ID")
                .env_remove("SLURM_ARRAY_TASK_COUNT")
                .output()
                .map_err(|e| format!("{}: {e}", cmd[0]))?;
            if !out.status.success() {
                return Err(format!(
                    "apply-model --list-shards: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|s| format!("{s}.parquet"))
                .collect()
        }
        Stage::Precocity => vec![
            "documents.tsv".into(),
            "documents.parquet".into(),
            "chunks.parquet".into(),
        ],
        Stage::Report => vec![REPORT_PAGE.into()],
    })
}

/// The report stage's page, in its output folder.
pub const REPORT_PAGE: &str = "index.html";

/// Whether a stage's outputs are complete and intact.
pub fn is_done(config: &Config, stage: Stage) -> Result<bool> {
    let dir = config.run_dir.join(stage.output_dir());
    if !dir.join(manifest::MANIFEST).exists() {
        return Ok(false);
    }
    let listed = Manifest::load(&dir).map_err(|e| e.to_string())?;
    let complete = expected_outputs(config, stage)?
        .iter()
        .all(|f| listed.files.contains_key(f));
    Ok(complete
        && manifest::verify(&dir)
            .map_err(|e| e.to_string())?
            .is_empty())
}

/// What would make a stage fail wherever it runs: a corpus or base model that does not exist,
/// an API key file others can read.
fn input_problems(config: &Config) -> Vec<String> {
    let mut found: Vec<String> = [
        ("corpus", &config.corpus),
        ("base_model", &config.base_model),
    ]
    .into_iter()
    .filter(|(_, path)| !path.exists())
    .map(|(what, path)| format!("{what} {} does not exist", path.display()))
    .collect();
    if let Some(key_file) = &config.paraphrase_gen.api_key_file {
        if config.paraphrase_gen.enabled {
            found.extend(config::check_key_file(key_file).err());
        }
    }
    found
}

/// What would make the config's jobs fail under `profile` after waiting in the queue: a
/// corpus or base model that does not exist, a GPU stage whose binary is not a CUDA build
/// (checked with its `--version`), an API key file others can read. `submit` refuses to queue
/// anything while there are any; `plan` lists them beside the scripts it writes. Errors: an
/// unknown profile.
pub fn problems(config: &Config, profile: &str) -> Result<Vec<String>> {
    let default = config.profile(profile)?;
    let mut found = input_problems(config);
    for stage in stages(config) {
        let p = stage_profile(config, default, stage)?;
        if stages::runs_on_gpu(p, stage) {
            let program = stages::command(config, Some(p), stage).remove(0);
            if let Err(e) = stages::check_cuda_build(&program) {
                found.push(format!("{}: {e}", stage.name()));
            }
        }
    }
    Ok(found)
}

/// Writes every stage's sbatch script into RUN/slurm/, each under the stage's own profile or
/// `profile`; returns (path, script) pairs. A preview: it writes them whatever [`problems`]
/// finds.
pub fn plan(config: &Config, profile: &str) -> Result<Vec<(PathBuf, String)>> {
    let default = config.profile(profile)?;
    std::fs::create_dir_all(config.run_dir.join("slurm/logs"))
        .map_err(|e| format!("{}: {e}", config.run_dir.display()))?;
    let mut scripts = Vec::new();
    for (i, stage) in stages(config).into_iter().enumerate() {
        let path = script_path(&config.run_dir, i, stage);
        let script = sbatch_script(config, stage_profile(config, default, stage)?, stage);
        common::atomic::write_atomic(&path, script.as_bytes()).map_err(|e| e.to_string())?;
        scripts.push((path, script));
    }
    Ok(scripts)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum StageState {
    Done,
    Pending {
        job: String,
        reason: String,
    },
    Running {
        job: String,
    },
    /// Waiting on a stage that failed: it will never start.
    Blocked {
        job: String,
    },
    Failed {
        job: String,
        state: String,
    },
    NotSubmitted,
}

impl std::fmt::Display for StageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StageState::Done => write!(f, "done"),
            StageState::Pending { job, reason } => write!(f, "pending (job {job}, {reason})"),
            StageState::Running { job } => write!(f, "running (job {job})"),
            StageState::Blocked { job } => {
                write!(f, "blocked: a stage it depends on failed (job {job})")
            }
            StageState::Failed { job, state } => {
                write!(f, "FAILED (job {job}: {state}; see slurm/logs/)")
            }
            StageState::NotSubmitted => write!(f, "not submitted"),
        }
    }
}

fn job_state(job: &str) -> Result<StageState> {
    if let Some(live) = cluster::squeue(job)? {
        return Ok(match live.state.as_str() {
            "PENDING" if live.reason.contains("DependencyNeverSatisfied") => {
                StageState::Blocked { job: job.into() }
            }
            "PENDING" => StageState::Pending {
                job: job.into(),
                reason: live.reason,
            },
            _ => StageState::Running { job: job.into() },
        });
    }
    let states = cluster::sacct(job)?;
    let bad = states
        .iter()
        .find(|s| !matches!(s.as_str(), "COMPLETED" | "PENDING" | "RUNNING"));
    Ok(match bad {
        Some(s) => StageState::Failed {
            job: job.into(),
            state: s.clone(),
        },
        // Ended without failing but the outputs do not verify: report it as a failure too.
        None if !states.is_empty() => StageState::Failed {
            job: job.into(),
            state: "COMPLETED, but its outputs are incomplete".into(),
        },
        None => StageState::NotSubmitted,
    })
}

/// Each stage's state, from its outputs, the submit state and squeue/sacct.
pub fn status(config: &Config) -> Result<Vec<(Stage, StageState)>> {
    let state = load_state(&config.run_dir);
    let mut out = Vec::new();
    for stage in stages(config) {
        let s = if is_done(config, stage)? {
            StageState::Done
        } else {
            match state.jobs.get(stage.name()) {
                Some(job) => job_state(job)?,
                None => StageState::NotSubmitted,
            }
        };
        out.push((stage, s));
    }
    Ok(out)
}

/// Submits what is not finished, chaining with afterok; returns (stage, job id or "done").
/// Refuses, before writing or queueing anything, while [`problems`] finds any.
pub fn submit(config: &Config, profile: &str) -> Result<Vec<(Stage, String)>> {
    let found = problems(config, profile)?;
    if !found.is_empty() {
        return Err(found.join("\n"));
    }
    let scripts = plan(config, profile)?;
    let mut state = load_state(&config.run_dir);
    let mut previous: Option<String> = None;
    let mut out = Vec::new();
    for (stage, (path, _)) in stages(config).into_iter().zip(&scripts) {
        if previous.is_none() && is_done(config, stage)? {
            out.push((stage, "done".into()));
            continue;
        }
        if let Some(job) = state.jobs.get(stage.name()).cloned() {
            match job_state(&job)? {
                StageState::Pending { .. } | StageState::Running { .. } => {
                    out.push((stage, job.clone()));
                    previous = Some(job);
                    continue;
                }
                // Its dependency failed earlier: it can never run; replace it.
                StageState::Blocked { .. } => cluster::scancel(&job)?,
                _ => {}
            }
        }
        let job = cluster::sbatch(path, previous.as_deref())?;
        state.jobs.insert(stage.name().into(), job.clone());
        save_state(&config.run_dir, &state)?;
        out.push((stage, job.clone()));
        previous = Some(job);
    }
    Ok(out)
}

/// Runs the unfinished stages here, one after the other, with the same command lines the
/// sbatch scripts run.
pub fn run_local(config: &Config, mut on_stage: impl FnMut(Stage, bool)) -> Result<()> {
    let found = input_problems(config);
    if !found.is_empty() {
        return Err(found.join("\n"));
    }
    std::fs::create_dir_all(&config.run_dir)
        .map_err(|e| format!("{}: {e}", config.run_dir.display()))?;
    for stage in stages(config) {
        if is_done(config, stage)? {
            on_stage(stage, true);
            continue;
        }
        on_stage(stage, false);
        let cmd = stages::command(config, None, stage);
        // The stages' stdout goes to stderr with their logs: run-local's own stdout carries
        // only the report's path, for scripts.
        let status = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdout(std::io::stderr())
            .current_dir(&config.run_dir)
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("SLURM_ARRAY_TASK_COUNT")
            .status()
            .map_err(|e| {
                format!(
                    "{}: {e} (build the stages first: cargo build --release)",
                    cmd[0]
                )
            })?;
        if !status.success() {
            return Err(format!(
                "{} failed ({status}); fix it and rerun: finished stages are skipped",
                stage.name()
            ));
        }
    }
    Ok(())
}

/// Every MANIFEST.json under `dir` (the folder itself included), verified.
pub fn verify_tree(dir: &Path) -> Result<Vec<(PathBuf, Vec<manifest::Finding>)>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if d.join(manifest::MANIFEST).exists() {
            found.push((d.clone(), manifest::verify(&d).map_err(|e| e.to_string())?));
        }
        let entries = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    if found.is_empty() {
        return Err(format!("{}: no MANIFEST.json found", dir.display()));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// The tuned model's held-out measures beside the base model's: (metric, base, tuned) for
/// successive-passage MRR@10 and the kNN year error when tune-embeddings evaluated on a
/// corpus, else its selecting metric. From the model's training_args.json.
pub fn tuning_summary(config: &Config) -> Vec<(String, f64, f64)> {
    let path = config.run_dir.join("model/training_args.json");
    let Some(args) = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    else {
        return Vec::new();
    };
    let held_out = &args["held_out"];
    let selected = held_out["selected_by"]
        .as_str()
        .unwrap_or("mrr@10")
        .to_string();
    let wanted = ["successive_mrr@10", "knn_year_error", "knn_same_decade"];
    let mut metrics: Vec<String> = wanted
        .iter()
        .filter(|m| held_out["tuned"].get(**m).is_some())
        .map(|m| m.to_string())
        .collect();
    if metrics.is_empty() {
        metrics.push(selected);
    }
    metrics
        .into_iter()
        .filter_map(|m| {
            let base = held_out["base"][&m].as_f64()?;
            let tuned = held_out["tuned"][&m].as_f64()?;
            Some((m, base, tuned))
        })
        .collect()
}
