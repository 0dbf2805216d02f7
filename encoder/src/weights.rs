//! The tensors of a `model.safetensors`, under their Hugging Face names.
//!
//! Names are looked up without the architecture prefix some checkpoints carry (`bert.`,
//! `roberta.`), and saved back under exactly the names they were loaded with, buffers and the
//! unused pooler included, so the saved file is a drop-in replacement for the base model's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Result, Tensor, Var};

use crate::error::Error;

pub struct Weights {
    /// Canonical (prefix-less) name → tensor.
    tensors: BTreeMap<String, Tensor>,
    /// Canonical name → name in the file.
    file_names: BTreeMap<String, String>,
    /// Canonical names the model read; these are the trainable parameters.
    used: Mutex<BTreeSet<String>>,
    /// Whether the read tensors are [`Var`]s an optimizer may change.
    trainable: bool,
}

const PREFIXES: [&str; 3] = ["bert.", "roberta.", "model."];

impl Weights {
    /// Loads every tensor; floating-point ones are converted to `dtype`.
    pub fn load(path: &Path, device: &Device, dtype: DType) -> crate::Result<Self> {
        let raw = candle_core::safetensors::load(path, device)
            .map_err(|e| Error::model(path, format!("cannot read model.safetensors: {e}")))?;
        let mut tensors = BTreeMap::new();
        let mut file_names = BTreeMap::new();
        for (name, t) in raw {
            let canonical = PREFIXES
                .iter()
                .find_map(|p| name.strip_prefix(p))
                .unwrap_or(&name)
                .to_string();
            let t = if t.dtype().is_float() && t.dtype() != dtype {
                t.to_dtype(dtype)?
            } else {
                t
            };
            file_names.insert(canonical.clone(), name);
            tensors.insert(canonical, t);
        }
        Ok(Weights {
            tensors,
            file_names,
            used: Mutex::default(),
            trainable: false,
        })
    }

    pub fn get(&self, name: &str) -> Result<Tensor> {
        self.get_opt(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor `{name}`")))
    }

    pub fn get_opt(&self, name: &str) -> Option<Tensor> {
        let t = self.tensors.get(name)?.clone();
        self.used
            .lock()
            .expect("not poisoned")
            .insert(name.to_string());
        Some(t)
    }

    pub fn is_trainable(&self) -> bool {
        self.trainable
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A copy with floating-point tensors cast to `dtype`, for mixed precision: the casts are
    /// ops of candle's graph, so gradients of a model built from the copy reach these tensors.
    pub fn cast(&self, dtype: DType) -> Result<Weights> {
        let tensors = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let t = if t.dtype().is_float() {
                    t.to_dtype(dtype)?
                } else {
                    t.clone()
                };
                Ok((name.clone(), t))
            })
            .collect::<Result<_>>()?;
        Ok(Weights {
            tensors,
            file_names: self.file_names.clone(),
            used: Mutex::default(),
            trainable: self.trainable,
        })
    }

    /// Names as stored in the file, sorted.
    pub fn file_names(&self) -> Vec<String> {
        self.file_names.values().cloned().collect()
    }

    /// Replaces every tensor the model has read with a [`Var`] holding the same values and
    /// returns them by name. A model built from these weights afterwards is trainable, and
    /// updating a var updates it.
    pub fn make_trainable(&mut self) -> Result<Vec<(String, Var)>> {
        let used = self.used.lock().expect("not poisoned").clone();
        let mut vars = Vec::with_capacity(used.len());
        for name in used {
            let t = &self.tensors[&name];
            if !t.dtype().is_float() {
                continue;
            }
            let var = Var::from_tensor(t)?;
            self.tensors.insert(name.clone(), var.as_tensor().clone());
            vars.push((name, var));
        }
        self.trainable = true;
        Ok(vars)
    }

    /// Writes all tensors under their original names, as f32 with `format: pt` metadata
    /// (transformers refuses a safetensors file without it).
    pub fn save(&self, path: &Path) -> crate::Result<()> {
        let mut out: Vec<(String, Tensor)> = Vec::with_capacity(self.tensors.len());
        for (canonical, t) in &self.tensors {
            let t = if t.dtype().is_float() && t.dtype() != DType::F32 {
                t.to_dtype(DType::F32)?
            } else {
                t.clone()
            };
            let t = t.to_device(&Device::Cpu)?.contiguous()?;
            out.push((self.file_names[canonical].clone(), t));
        }
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        let tmp = common::atomic::temp_path(path);
        safetensors::serialize_to_file(out, Some(metadata), &tmp)
            .map_err(|e| Error::model(path, format!("cannot write safetensors: {e}")))?;
        Ok(common::atomic::commit_rename(&tmp, path)?)
    }
}
