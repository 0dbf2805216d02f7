//! The optimizer side of training: gradients that can be summed over passes (GradCache),
//! global grad-norm clipping, f16's dynamic loss scaling, and an AdamW whose state can be
//! checkpointed (candle-nn's keeps its moments private, which rules out exact resume).

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};

/// Gradients aligned with a parameter list (None: the parameter got none). Unlike candle's
/// `GradStore` they can be summed over several backward passes (gradient caching).
pub type Grads = Vec<Option<Tensor>>;

/// The gradients of `vars` in `store`.
pub fn grads_of(vars: &[(String, Var)], store: &GradStore) -> Grads {
    vars.iter()
        // Detached, so no gradient can hold on to the graph it came from.
        .map(|(_, v)| store.get(v.as_tensor()).map(Tensor::detach))
        .collect()
}

/// `acc += more`, parameter by parameter.
pub fn accumulate(acc: &mut Grads, more: Grads) -> Result<()> {
    for (a, m) in acc.iter_mut().zip(more) {
        *a = match (a.take(), m) {
            (Some(x), Some(y)) => Some((x + y)?),
            (x, y) => x.or(y),
        };
    }
    Ok(())
}

/// Multiplies every gradient by `factor`.
pub fn scale_grads(grads: &mut Grads, factor: f64) -> Result<()> {
    for g in grads.iter_mut() {
        if let Some(t) = g.take() {
            *g = Some((t * factor)?);
        }
    }
    Ok(())
}

/// Gradients of `loss × scale` (f16's loss scaling; a scale of 1 is the plain loss).
pub fn scaled_backward(loss: &Tensor, scale: f64) -> Result<GradStore> {
    if scale == 1.0 {
        loss.backward()
    } else {
        (loss * scale)?.backward()
    }
}

/// Undoes [`scaled_backward`]'s scale on the gradients.
pub fn unscale(grads: &mut Grads, scale: f64) -> Result<()> {
    if scale != 1.0 {
        scale_grads(grads, 1.0 / scale)?;
    }
    Ok(())
}

/// Dynamic loss scaling for f16 training, as torch's `GradScaler`: the loss is multiplied by
/// `scale` before back-propagation so small gradients survive f16's range, and the gradients
/// are divided by it afterwards. A step whose gradients overflowed is skipped and the scale
/// halved; after `GROWTH_INTERVAL` good steps in a row it doubles.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossScale {
    pub scale: f64,
    good_steps: u64,
    /// Steps skipped so far (their optimizer update was not applied).
    pub skipped: u64,
}

impl Default for LossScale {
    fn default() -> Self {
        LossScale {
            scale: 65536.0,
            good_steps: 0,
            skipped: 0,
        }
    }
}

impl LossScale {
    const GROWTH_INTERVAL: u64 = 2000;

    /// Records whether this step's gradients were finite; returns whether to apply it.
    pub fn update(&mut self, finite: bool) -> bool {
        if finite {
            self.good_steps += 1;
            if self.good_steps == Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
            self.skipped += 1;
        }
        finite
    }
}

/// Scales all gradients so their global L2 norm is at most `max_norm`; returns the norm
/// before clipping (as PyTorch's `clip_grad_norm_`).
pub fn clip_grad_norm(grads: &mut Grads, max_norm: f64) -> Result<f64> {
    let mut total = 0f64;
    for g in grads.iter().flatten() {
        total += g
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    let norm = total.sqrt();
    if norm > max_norm {
        scale_grads(grads, max_norm / (norm + 1e-6))?;
    }
    Ok(norm)
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's AdamW defaults with sentence-transformers' weight decay of 0.01.
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW (decoupled weight decay). As in the Hugging Face trainer that sentence-transformers
/// uses, biases and LayerNorm weights are not decayed.
pub struct AdamW {
    params: Vec<Param>,
    step: u64,
    pub config: AdamWConfig,
}

struct Param {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

impl AdamW {
    pub fn new(vars: &[(String, Var)], config: AdamWConfig) -> Result<Self> {
        let params = vars
            .iter()
            .map(|(name, var)| {
                Ok(Param {
                    name: name.clone(),
                    var: var.clone(),
                    m: var.zeros_like()?,
                    v: var.zeros_like()?,
                    decay: !(name.ends_with("bias") || name.contains("LayerNorm")),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            params,
            step: 0,
            config,
        })
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr`, `grads` aligned with the parameters given to
    /// [`AdamW::new`]. Parameters without a gradient are left alone.
    pub fn step(&mut self, grads: &Grads, lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2 = 1.0 - c.beta2.powi(self.step as i32);
        for (p, g) in self.params.iter_mut().zip(grads) {
            let Some(g) = g else {
                continue;
            };
            let theta = p.var.as_tensor();
            let theta = if p.decay && c.weight_decay > 0.0 {
                (theta * (1.0 - lr * c.weight_decay))?
            } else {
                theta.clone()
            };
            p.m = ((&p.m * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            p.v = ((&p.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&p.m / bias1)?;
            let v_hat = (&p.v / bias2)?;
            let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            p.var.set(&(theta - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// Moments by name (`{name}.exp_avg`, `{name}.exp_avg_sq`) and the step count, for a
    /// checkpoint.
    pub fn state(&self) -> (u64, Vec<(String, Tensor)>) {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for p in &self.params {
            out.push((format!("{}.exp_avg", p.name), p.m.clone()));
            out.push((format!("{}.exp_avg_sq", p.name), p.v.clone()));
        }
        (self.step, out)
    }

    /// Restores what [`Self::state`] returned.
    pub fn load_state(
        &mut self,
        step: u64,
        tensors: &std::collections::HashMap<String, Tensor>,
    ) -> Result<()> {
        for p in &mut self.params {
            let get = |suffix: &str| {
                tensors
                    .get(&format!("{}.{suffix}", p.name))
                    .cloned()
                    .ok_or_else(|| {
                        candle_core::Error::Msg(format!(
                            "checkpoint lacks optimizer state for {}",
                            p.name
                        ))
                    })
            };
            p.m = get("exp_avg")?.to_device(p.var.device())?;
            p.v = get("exp_avg_sq")?.to_device(p.var.device())?;
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::LossScale;

    #[test]
    fn loss_scale_halves_on_overflow_and_doubles_after_a_run_of_good_steps() {
        let mut s = LossScale::default();
        assert!(!s.update(false));
        assert_eq!((s.scale, s.skipped), (32768.0, 1));
        for _ in 0..LossScale::GROWTH_INTERVAL - 1 {
            assert!(s.update(true));
        }
        assert_eq!(s.scale, 32768.0);
        s.update(true);
        assert_eq!(s.scale, 65536.0);
        for _ in 0..40 {
            s.update(false);
        }
        assert_eq!(s.scale, 1.0, "never below 1");
    }
}
