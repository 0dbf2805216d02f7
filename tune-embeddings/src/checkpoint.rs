//! Training checkpoints: everything a run needs to continue exactly where it stopped.
//!
//! ```text
//! CKPT/last/weights.safetensors     trainable parameters
//! CKPT/last/optimizer.safetensors   AdamW moments
//! CKPT/last/state.json              step, epoch, batch position, best metric, run fingerprint
//! CKPT/best/weights.safetensors     the parameters at the best evaluation
//! CKPT/metrics.jsonl                one line per logged step and per evaluation
//! ```
//! The data order and the dropout masks are functions of (seed, epoch, step), so the position
//! is all the RNG state there is. Each folder is replaced atomically (written beside, renamed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::eval::Metrics;
use crate::optim::LossScale;
use crate::trainer::Trainer;
use crate::{Error, Options};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub metric: String,
    pub value: f64,
    pub step: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Optimizer steps taken.
    pub step: u64,
    /// Epoch in progress and batches of it already trained on.
    pub epoch: usize,
    pub batch_in_epoch: usize,
    pub best: Option<Best>,
    /// Hash of everything that must not change across a resume (data, model, options).
    pub fingerprint: String,
    /// f16 training's dynamic loss scale.
    #[serde(default)]
    pub loss_scale: Option<LossScale>,
}

impl State {
    /// Updates the optimizer applied: steps minus those skipped for overflowing gradients.
    pub fn optimizer_steps(&self) -> u64 {
        self.step - self.loss_scale.map_or(0, |s| s.skipped)
    }
}

pub fn save_tensors(path: &Path, tensors: Vec<(String, Tensor)>) -> Result<(), Error> {
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, path)
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))
}

pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, Error> {
    candle_core::safetensors::load(path, device)
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))
}

/// Values of the trainable parameters, by name.
pub fn var_values(vars: &[(String, Var)]) -> Vec<(String, Tensor)> {
    vars.iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
        .collect()
}

/// Sets every parameter from `tensors`; all must be present with the same shape.
pub fn restore_vars(
    vars: &[(String, Var)],
    tensors: &HashMap<String, Tensor>,
) -> Result<(), Error> {
    for (name, var) in vars {
        let t = tensors
            .get(name)
            .ok_or_else(|| Error::Checkpoint(format!("checkpoint lacks parameter {name}")))?;
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(())
}

pub fn write_state(dir: &Path, state: &State) -> Result<(), Error> {
    let path = dir.join("state.json");
    let json = serde_json::to_vec_pretty(state).expect("state serializes");
    std::fs::write(&path, json).map_err(|e| Error::Common(common::Error::io(&path, e)))
}

pub fn read_state(dir: &Path) -> Result<State, Error> {
    let path = dir.join("state.json");
    let bytes = std::fs::read(&path).map_err(|e| Error::Common(common::Error::io(&path, e)))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))
}

/// A run's checkpoint folder (layout in the module docs).
pub struct Checkpoints {
    pub dir: PathBuf,
    fingerprint: String,
}

impl Checkpoints {
    /// Creates `dir` if needed. `fingerprint` identifies the data, model and options; only a
    /// checkpoint written with the same one is resumed.
    pub fn open(dir: PathBuf, fingerprint: String) -> Result<Self, Error> {
        std::fs::create_dir_all(&dir).map_err(|e| common::Error::io(&dir, e))?;
        Ok(Checkpoints { dir, fingerprint })
    }

    /// The state of a fresh run.
    pub fn fresh_state(&self, loss_scale: Option<LossScale>) -> State {
        State {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            best: None,
            fingerprint: self.fingerprint.clone(),
            loss_scale,
        }
    }

    /// Loads the last checkpoint into `trainer` (weights and optimizer) and returns its
    /// state; `None` when there is none. Errors when it was written for other data, model or
    /// options.
    pub fn resume(&self, trainer: &mut Trainer) -> Result<Option<State>, Error> {
        let last = self.dir.join("last");
        if !last.join("state.json").exists() {
            return Ok(None);
        }
        let state = read_state(&last)?;
        if state.fingerprint != self.fingerprint {
            return Err(Error::Checkpoint(format!(
                "{} was written for other data, model or options; to start afresh, remove it (or run without --resume, or use another --checkpoint-dir)",
                self.dir.display()
            )));
        }
        let device = trainer.encoder.device().clone();
        restore_vars(
            &trainer.vars,
            &load_tensors(&last.join("weights.safetensors"), &device)?,
        )?;
        trainer.optimizer.load_state(
            state.optimizer_steps(),
            &load_tensors(&last.join("optimizer.safetensors"), &device)?,
        )?;
        Ok(Some(state))
    }

    /// Replaces `last/` with the trainer's weights and optimizer and `state`.
    pub fn save_last(&self, state: &State, trainer: &Trainer) -> Result<(), Error> {
        common::atomic::replace_dir(&self.dir.join("last"), |dir| {
            save_tensors(&dir.join("weights.safetensors"), var_values(&trainer.vars))?;
            save_tensors(
                &dir.join("optimizer.safetensors"),
                trainer.optimizer.state().1,
            )?;
            write_state(dir, state)
        })
    }

    /// Replaces `best/` with the trainer's weights and their evaluation.
    pub fn save_best(&self, trainer: &Trainer, metrics: &Metrics) -> Result<(), Error> {
        common::atomic::replace_dir(&self.dir.join("best"), |dir| {
            save_tensors(&dir.join("weights.safetensors"), var_values(&trainer.vars))?;
            std::fs::write(
                dir.join("metrics.json"),
                serde_json::to_vec_pretty(metrics).expect("json"),
            )
            .map_err(|e| Error::Common(common::Error::io(dir, e)))
        })
    }

    /// Sets the trainer's weights to the best evaluation's and returns that evaluation.
    pub fn restore_best(&self, trainer: &Trainer) -> Result<Option<Metrics>, Error> {
        let best = self.dir.join("best");
        restore_vars(
            &trainer.vars,
            &load_tensors(&best.join("weights.safetensors"), trainer.encoder.device())?,
        )?;
        let bytes =
            std::fs::read(best.join("metrics.json")).map_err(|e| common::Error::io(&best, e))?;
        Ok(serde_json::from_slice(&bytes).ok())
    }
}

impl Options {
    /// `--checkpoint-dir`, by default `<out>.checkpoints` beside the output.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.checkpoint_dir.clone().unwrap_or_else(|| {
            let name = self
                .out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            self.out.with_file_name(format!(
                "{}.checkpoints",
                name.unwrap_or_else(|| "model".into())
            ))
        })
    }
}
