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
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use encoder::train::LossScale;
use serde::{Deserialize, Serialize};

use crate::Error;

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
