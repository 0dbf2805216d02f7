//! sentence-transformers' Pooling module: token states → one vector per text, with padding
//! masked out; and its Normalize module.

use candle_core::{Result, Tensor, D};
use serde::{Deserialize, Serialize};

/// `1_Pooling/config.json`. Modes that are on are concatenated in sentence-transformers'
/// order: cls, max, mean, mean_sqrt_len.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolingConfig {
    pub word_embedding_dimension: usize,
    #[serde(default)]
    pub pooling_mode_cls_token: bool,
    #[serde(default)]
    pub pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pub pooling_mode_max_tokens: bool,
    #[serde(default)]
    pub pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub pooling_mode_weightedmean_tokens: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub pooling_mode_lasttoken: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_prompt: Option<bool>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl PoolingConfig {
    pub fn mean(dim: usize) -> Self {
        PoolingConfig {
            word_embedding_dimension: dim,
            pooling_mode_cls_token: false,
            pooling_mode_mean_tokens: true,
            pooling_mode_max_tokens: false,
            pooling_mode_mean_sqrt_len_tokens: false,
            pooling_mode_weightedmean_tokens: false,
            pooling_mode_lasttoken: false,
            include_prompt: None,
        }
    }

    /// Why this configuration cannot be run, if it cannot.
    pub fn unsupported(&self) -> Option<String> {
        if self.pooling_mode_weightedmean_tokens || self.pooling_mode_lasttoken {
            return Some("weighted-mean and last-token pooling are not supported".into());
        }
        let any = self.pooling_mode_cls_token
            || self.pooling_mode_mean_tokens
            || self.pooling_mode_max_tokens
            || self.pooling_mode_mean_sqrt_len_tokens;
        (!any).then(|| "no pooling mode is enabled".into())
    }

    pub fn output_dim(&self) -> usize {
        let modes = [
            self.pooling_mode_cls_token,
            self.pooling_mode_max_tokens,
            self.pooling_mode_mean_tokens,
            self.pooling_mode_mean_sqrt_len_tokens,
        ];
        self.word_embedding_dimension * modes.iter().filter(|m| **m).count()
    }

    /// `states` `[batch, seq, hidden]`, `mask` `[batch, seq]` (1 token / 0 padding, same dtype)
    /// → `[batch, output_dim]`. Differentiable.
    pub fn pool(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let mask3 = mask.unsqueeze(D::Minus1)?; // [b, t, 1]
        let mut parts = Vec::new();
        if self.pooling_mode_cls_token {
            parts.push(states.narrow(1, 0, 1)?.squeeze(1)?);
        }
        if self.pooling_mode_max_tokens {
            // Padding gets a very low value so it never wins the max.
            let low = ((mask3.ones_like()? - &mask3)? * -1e9)?;
            parts.push(states.broadcast_add(&low)?.max(1)?);
        }
        if self.pooling_mode_mean_tokens || self.pooling_mode_mean_sqrt_len_tokens {
            let sum = states.broadcast_mul(&mask3)?.sum(1)?; // [b, hidden]
            let count = mask.sum_keepdim(1)?.clamp(1e-9, f64::INFINITY)?; // [b, 1]
            if self.pooling_mode_mean_tokens {
                parts.push(sum.broadcast_div(&count)?);
            }
            if self.pooling_mode_mean_sqrt_len_tokens {
                parts.push(sum.broadcast_div(&count.sqrt()?)?);
            }
        }
        if parts.len() == 1 {
            Ok(parts.pop().expect("one part"))
        } else {
            Tensor::cat(&parts, 1)
        }
    }
}

/// L2-normalizes rows, as torch's `F.normalize` (norm clamped at 1e-12). Differentiable.
pub fn normalize(xs: &Tensor) -> Result<Tensor> {
    let norm = xs
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    xs.broadcast_div(&norm)
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}
