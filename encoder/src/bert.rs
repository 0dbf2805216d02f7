//! BERT encoder (and the body RoBERTa shares with it), under Hugging Face tensor names.

use candle_core::{DType, Module, Result, Tensor};
use serde::Deserialize;

use super::layers::{
    softmax_last_dim, Activation, AttentionMask, Embedding, LayerNorm, Linear, Mode, Packing,
};
use super::tokenize::PaddedBatch;
use super::weights::Weights;

/// The fields of a BERT-family `config.json` the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f32,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f32,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_dropout() -> f32 {
    0.1
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

/// How position ids are laid out: BERT counts from 0, RoBERTa from `padding_idx + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    FromZero,
    AfterPadding { padding_idx: u32 },
}

struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Option<Embedding>,
    norm: LayerNorm,
    positions: Positions,
}

impl Embeddings {
    fn load(w: &Weights, cfg: &BertConfig, positions: Positions) -> Result<Self> {
        let token_type = if w.contains("embeddings.token_type_embeddings.weight") {
            Some(Embedding::load(
                w,
                "embeddings.token_type_embeddings.weight",
            )?)
        } else {
            None
        };
        Ok(Embeddings {
            word: Embedding::load(w, "embeddings.word_embeddings.weight")?,
            position: Embedding::load(w, "embeddings.position_embeddings.weight")?,
            token_type,
            norm: LayerNorm::load(w, "embeddings.LayerNorm", cfg.layer_norm_eps)?,
            positions,
        })
    }

    /// `ids`: `[batch, seq]` u32, sequences left-aligned with padding after them.
    fn forward(&self, ids: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let (_, seq) = ids.dims2()?;
        let offset = match self.positions {
            Positions::FromZero => 0,
            Positions::AfterPadding { padding_idx } => padding_idx + 1,
        };
        if seq + offset as usize > self.position.rows()? {
            candle_core::bail!(
                "sequence of {seq} tokens exceeds the model's {} positions",
                self.position.rows()? - offset as usize
            );
        }
        // Padding positions are masked out of attention and pooling, so their position ids
        // do not matter; one shared row of positions serves the whole batch.
        let pos_ids = Tensor::arange(offset, offset + seq as u32, ids.device())?;
        let pos = self.position.forward(&pos_ids)?; // [seq, hidden]
        let mut xs = self.word.forward(ids)?.broadcast_add(&pos)?;
        if let Some(tt) = &self.token_type {
            // Sentence embedding models use a single segment: type id 0 everywhere.
            let zero = tt.forward(&Tensor::zeros(1, DType::U32, ids.device())?)?;
            xs = xs.broadcast_add(&zero)?;
        }
        let xs = self.norm.forward(&xs, mode)?;
        mode.hidden_dropout(&xs)
    }
}

struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    /// q, k and v stacked once, when the weights are not trained.
    qkv: Option<Linear>,
}

impl SelfAttention {
    fn load(w: &Weights, p: &str, cfg: &BertConfig) -> Result<Self> {
        if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            candle_core::bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size,
                cfg.num_attention_heads
            );
        }
        let query = Linear::load(w, &format!("{p}.attention.self.query"))?;
        let key = Linear::load(w, &format!("{p}.attention.self.key"))?;
        let value = Linear::load(w, &format!("{p}.attention.self.value"))?;
        let qkv = (!w.is_trainable())
            .then(|| Linear::stack_frozen(&[&query, &key, &value]))
            .transpose()?;
        Ok(SelfAttention {
            query,
            key,
            value,
            qkv,
            output: Linear::load(w, &format!("{p}.attention.output.dense"))?,
            norm: LayerNorm::load(
                w,
                &format!("{p}.attention.output.LayerNorm"),
                cfg.layer_norm_eps,
            )?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.hidden_size / cfg.num_attention_heads,
        })
    }

    /// `xs`: `[batch, seq, hidden]`.
    /// `xs`: `[batch, seq, hidden]`, or `[tokens, hidden]` with a packed mask.
    fn forward(&self, xs: &Tensor, mask: &AttentionMask, mode: &mut Mode) -> Result<Tensor> {
        let ctx = match mask {
            AttentionMask::Fused(mask) => {
                let seed = mode.attention_dropout_seed();
                super::attention::attention(&self.qkv(xs)?, mask, self.heads, seed)?
            }
            AttentionMask::Packed(lengths) => {
                super::attention::attention_packed(&self.qkv(xs)?, lengths, self.heads)?
            }
            AttentionMask::Composed(bias) => self.composed_context(xs, bias, mode)?,
        };
        let out = mode.hidden_dropout(&self.output.forward(&ctx)?)?;
        self.norm.forward_residual(&out, xs, mode)
    }

    /// q, k and v in one matmul, side by side, for the fused attention kernel (CPU f32).
    fn qkv(&self, xs: &Tensor) -> Result<Tensor> {
        match &self.qkv {
            Some(qkv) => qkv.forward(xs),
            None => Linear::stack(&[&self.query, &self.key, &self.value])?.forward(xs),
        }
    }

    /// The attention context from candle ops, for devices and dtypes the fused kernel does
    /// not cover.
    fn composed_context(&self, xs: &Tensor, bias: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let (b, t, hidden) = xs.dims3()?;
        let split = |x: Tensor| -> Result<Tensor> {
            x.reshape((b, t, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.query.forward(xs)?)?;
        let k = split(self.key.forward(xs)?)?;
        let v = split(self.value.forward(xs)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(bias)?;
        let probs = mode.attention_dropout(&softmax_last_dim(&scores, mode)?)?;
        probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, hidden))
    }
}

struct Layer {
    attention: SelfAttention,
    intermediate: Linear,
    output: Linear,
    norm: LayerNorm,
    activation: Activation,
}

impl Layer {
    fn load(w: &Weights, p: &str, cfg: &BertConfig, activation: Activation) -> Result<Self> {
        Ok(Layer {
            attention: SelfAttention::load(w, p, cfg)?,
            intermediate: Linear::load(w, &format!("{p}.intermediate.dense"))?,
            output: Linear::load(w, &format!("{p}.output.dense"))?,
            norm: LayerNorm::load(w, &format!("{p}.output.LayerNorm"), cfg.layer_norm_eps)?,
            activation,
        })
    }

    fn forward(&self, xs: &Tensor, mask: &AttentionMask, mode: &mut Mode) -> Result<Tensor> {
        let xs = self.attention.forward(xs, mask, mode)?;
        let h = self.activation.forward(&self.intermediate.forward(&xs)?)?;
        let out = mode.hidden_dropout(&self.output.forward(&h)?)?;
        self.norm.forward_residual(&out, &xs, mode)
    }
}

/// A BERT-style encoder stack: embeddings then `num_hidden_layers` post-norm layers.
pub struct BertEncoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pub hidden_size: usize,
    pub hidden_dropout: f32,
    pub attention_dropout: f32,
    pub max_positions: usize,
}

impl BertEncoder {
    pub fn load(w: &Weights, cfg: &BertConfig, positions: Positions) -> Result<Self> {
        if let Some(kind) = cfg.position_embedding_type.as_deref() {
            if kind != "absolute" {
                candle_core::bail!(
                    "position_embedding_type {kind:?} is not supported (only \"absolute\")"
                );
            }
        }
        let activation = Activation::parse(&cfg.hidden_act).ok_or_else(|| {
            candle_core::Error::Msg(format!("hidden_act {:?} is not supported", cfg.hidden_act))
        })?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::load(w, &format!("encoder.layer.{i}"), cfg, activation))
            .collect::<Result<Vec<_>>>()?;
        let offset = match positions {
            Positions::FromZero => 0,
            Positions::AfterPadding { padding_idx } => padding_idx as usize + 1,
        };
        Ok(BertEncoder {
            embeddings: Embeddings::load(w, cfg, positions)?,
            layers,
            hidden_size: cfg.hidden_size,
            hidden_dropout: cfg.hidden_dropout_prob,
            attention_dropout: cfg.attention_probs_dropout_prob,
            max_positions: cfg.max_position_embeddings - offset,
        })
    }

    /// Token states `[batch, seq, hidden]` of a padded batch.
    pub fn forward(&self, batch: &PaddedBatch, mode: &mut Mode) -> Result<Tensor> {
        let xs = self.embeddings.forward(&batch.ids, mode)?;
        match Packing::for_inference(batch, mode)? {
            Some(packing) => {
                let packed = AttentionMask::Packed(packing.lengths.clone());
                let xs = self.layers_forward(packing.pack(&xs)?, &packed, mode)?;
                packing.unpack(&xs)
            }
            None => self.layers_forward(xs, &AttentionMask::padded(&batch.mask)?, mode),
        }
    }

    fn layers_forward(
        &self,
        mut xs: Tensor,
        mask: &AttentionMask,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        for layer in &self.layers {
            xs = layer.forward(&xs, mask, mode)?;
        }
        Ok(xs)
    }
}

/// Forward FLOPs per token of a BERT-style encoder with `seq` tokens per text: 4h² (QKV and
/// output projections) + 2h·i (feed-forward) multiply-adds per layer, plus attention scores
/// and context (2·seq·h).
pub fn forward_flops_per_token(
    hidden: usize,
    intermediate: usize,
    layers: usize,
    seq: usize,
) -> f64 {
    let (h, i, l, t) = (
        hidden as f64,
        intermediate as f64,
        layers as f64,
        seq as f64,
    );
    2.0 * l * (4.0 * h * h + 2.0 * h * i + 2.0 * t * h)
}
