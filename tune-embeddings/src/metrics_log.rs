//! The metrics log, `metrics.jsonl` in the checkpoint folder (copied into the saved model):
//! one JSON line per optimizer step (`"kind": "train"`: loss, learning rate, gradient norm,
//! loss scale, throughput) and per evaluation (`"kind": "eval"`: the held-out metrics).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::eval::Metrics;
use crate::trainer::StepOutcome;
use crate::Error;

pub struct MetricsLog {
    pub path: PathBuf,
}

impl MetricsLog {
    /// The log in `dir`: emptied for a fresh run, or cut after `resumed_at` (a resumed run
    /// writes the later lines again).
    pub fn open(dir: &Path, resumed_at: Option<u64>) -> Result<Self, Error> {
        let log = MetricsLog {
            path: dir.join("metrics.jsonl"),
        };
        match resumed_at {
            Some(step) => log.truncate(step)?,
            None => {
                let _ = std::fs::remove_file(&log.path);
            }
        }
        Ok(log)
    }

    /// Appends one JSON line.
    fn append(&self, value: serde_json::Value) -> Result<(), Error> {
        let path = &self.path;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| common::Error::io(path, e))?;
        writeln!(f, "{value}").map_err(|e| Error::Common(common::Error::io(path, e)))
    }

    /// Logs an optimizer step (`step` counts it).
    pub fn train(
        &self,
        step: u64,
        epoch: usize,
        lr: f64,
        outcome: &StepOutcome,
        loss_scale: Option<f64>,
        pairs_per_second: f64,
    ) -> Result<(), Error> {
        self.append(serde_json::json!({"kind": "train", "step": step, "epoch": epoch, "loss": outcome.loss, "lr": lr, "grad_norm": outcome.grad_norm, "loss_scale": loss_scale, "applied": outcome.applied, "pairs_per_second": pairs_per_second}))
    }

    /// Logs an evaluation.
    pub fn eval(&self, step: u64, epoch: usize, metrics: &Metrics) -> Result<(), Error> {
        self.append(
            serde_json::json!({"kind": "eval", "step": step, "epoch": epoch, "metrics": metrics}),
        )
    }

    /// The first evaluation logged: the base model's, when the run evaluated before training.
    pub fn first_eval(&self) -> Option<Metrics> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["kind"] == "eval" && v["step"] == 0)
            .and_then(|v| serde_json::from_value(v["metrics"].clone()).ok())
    }

    /// Drops lines of steps after `step`.
    fn truncate(&self, step: u64) -> Result<(), Error> {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        common::atomic::write_atomic(&self.path, kept.as_bytes())?;
        Ok(())
    }

    /// Copies the log into `dir` (the saved model), if anything was logged.
    pub fn copy_into(&self, dir: &Path) -> Result<(), Error> {
        if self.path.exists() {
            std::fs::copy(&self.path, dir.join("metrics.jsonl"))
                .map_err(|e| common::Error::io(&self.path, e))?;
        }
        Ok(())
    }
}
