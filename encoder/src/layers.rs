//! Transformer building blocks that work both ways, training and inference.
//!
//! On CPU in f32, linear layers, (residual +) LayerNorm, GELU and the attention core run our
//! fused kernels ([`super::fused`], [`super::attention`]), which have a backward. Elsewhere,
//! training composes them from candle primitives that have one (candle's own fused
//! `layer_norm` and `softmax_last_dim` have none, so gradients through them would silently
//! vanish) and inference takes candle's fused ops.
//! Dropout is real when training and the identity when inferring.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::tokenize::PaddedBatch;
use super::weights::Weights;

/// How a forward pass runs.
pub enum Mode {
    /// No gradients needed: fused kernels, no dropout.
    Infer,
    /// Differentiable ops and dropout drawn from a seeded RNG, so a resumed run draws the same
    /// masks as an uninterrupted one.
    Train(Box<Dropout>),
}

impl Mode {
    pub fn train(dropout: Dropout) -> Self {
        Mode::Train(Box::new(dropout))
    }

    pub fn is_train(&self) -> bool {
        matches!(self, Mode::Train(_))
    }

    /// Dropout with the hidden-state probability.
    pub fn hidden_dropout(&mut self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Mode::Infer => Ok(xs.clone()),
            Mode::Train(d) => d.apply(xs, d.hidden_p, xs.elem_count()),
        }
    }

    /// Attention dropout for the fused attention kernel, which draws its own masks from a
    /// seed taken from our RNG.
    pub fn attention_dropout_seed(&mut self) -> Option<super::attention::AttentionDropout> {
        match self {
            Mode::Train(d) if d.attention_p > 0.0 => Some(super::attention::AttentionDropout {
                p: d.attention_p,
                seed: d.rng.random(),
            }),
            _ => None,
        }
    }

    /// Dropout with the attention-probability probability on `[batch, heads, seq, seq]`
    /// probabilities, with the masks the fused kernel draws (one stream per sequence and head),
    /// so a seed gives the same training run on every device.
    pub fn attention_dropout(&mut self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Mode::Infer => Ok(xs.clone()),
            Mode::Train(d) => {
                let (_, _, queries, keys) = xs.dims4()?;
                d.apply(xs, d.attention_p, queries * keys)
            }
        }
    }
}

/// Seeded inverted dropout: keeps each value with probability 1-p and scales it by 1/(1-p).
pub struct Dropout {
    pub rng: ChaCha8Rng,
    pub hidden_p: f32,
    pub attention_p: f32,
}

impl Dropout {
    pub fn new(seed: u64, hidden_p: f32, attention_p: f32) -> Self {
        Dropout {
            rng: ChaCha8Rng::seed_from_u64(seed),
            hidden_p,
            attention_p,
        }
    }

    /// Dropout of `xs` whose mask is drawn in consecutive blocks of `block` values, block i
    /// from stream i of one seed.
    fn apply(&mut self, xs: &Tensor, p: f32, block: usize) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(xs.clone());
        }
        // The factors are drawn on the host from our seed (not the device's RNG), so they
        // depend on the seed alone.
        let seed = self.rng.random();
        let mut mask = vec![0f32; xs.elem_count()];
        for (stream, part) in mask.chunks_mut(block.max(1)).enumerate() {
            super::kernels::dropout_mask(seed, stream as u64, p, part);
        }
        let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
        xs * mask
    }
}

/// y = x Wᵀ + b over the last dimension, with HF's `[out, in]` weight layout.
#[derive(Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    /// A `[in, out]` copy for the fused kernel, kept for narrowing layers of models that are
    /// not trained (a trained weight would leave the copy stale).
    weight_t: Option<Tensor>,
}

impl Linear {
    pub fn load(w: &Weights, prefix: &str) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.weight"))?;
        let linear = Linear {
            weight,
            bias: w.get_opt(&format!("{prefix}.bias")),
            weight_t: None,
        };
        if w.is_trainable() {
            Ok(linear)
        } else {
            linear.frozen()
        }
    }

    /// The layer for a model that is not trained: narrowing layers get their `[in, out]` copy.
    fn frozen(mut self) -> Result<Linear> {
        let (out, inner) = self.weight.dims2()?;
        if inner > out && super::fused::applies(&self.weight) {
            self.weight_t = Some(self.weight.t()?.contiguous()?);
        }
        Ok(self)
    }

    /// [`Self::stack`] once, for a model that is not trained: a trained model's parts change
    /// every step, so it stacks them per forward pass instead.
    pub fn stack_frozen(parts: &[&Linear]) -> Result<Linear> {
        Self::stack(parts)?.frozen()
    }

    /// One layer computing all of `parts` side by side (e.g. q, k and v in one matmul).
    /// Built per forward pass from the parts' tensors, so gradients reach each part.
    pub fn stack(parts: &[&Linear]) -> Result<Linear> {
        let weights: Vec<&Tensor> = parts.iter().map(|l| &l.weight).collect();
        let bias = match parts
            .iter()
            .map(|l| l.bias.as_ref())
            .collect::<Option<Vec<_>>>()
        {
            Some(biases) => Some(Tensor::cat(&biases, 0)?),
            None => None,
        };
        Ok(Linear {
            weight: Tensor::cat(&weights, 0)?,
            bias,
            weight_t: None,
        })
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dims = xs.dims().to_vec();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let inner = dims[dims.len() - 1];
        let xs = xs.reshape((rows, inner))?;
        let ys = match &self.bias {
            Some(b) if super::fused::applies(&xs) => match &self.weight_t {
                Some(wt) => super::fused::linear_pretransposed(&xs, wt, b)?,
                None => super::fused::linear(&xs, &self.weight, b)?,
            },
            Some(b) => xs.matmul(&self.weight.t()?)?.broadcast_add(b)?,
            None => xs.matmul(&self.weight.t()?)?,
        };
        let mut out = dims;
        *out.last_mut().expect("non-empty") = self.weight.dim(0)?;
        ys.reshape(out)
    }
}

#[derive(Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(w: &Weights, prefix: &str, eps: f64) -> Result<Self> {
        // Old BERT checkpoints call these gamma/beta.
        let weight = w
            .get_opt(&format!("{prefix}.weight"))
            .map_or_else(|| w.get(&format!("{prefix}.gamma")), Ok)?;
        let bias = w
            .get_opt(&format!("{prefix}.bias"))
            .map_or_else(|| w.get(&format!("{prefix}.beta")), Ok)?;
        Ok(LayerNorm { weight, bias, eps })
    }

    /// `LayerNorm(xs + residual)`.
    pub fn forward_residual(&self, xs: &Tensor, residual: &Tensor, mode: &Mode) -> Result<Tensor> {
        if super::fused::applies(xs) {
            super::fused::add_layer_norm(xs, residual, &self.weight, &self.bias, self.eps as f32)
        } else {
            self.forward(&(xs + residual)?, mode)
        }
    }

    pub fn forward(&self, xs: &Tensor, mode: &Mode) -> Result<Tensor> {
        if super::fused::applies(xs) {
            super::fused::layer_norm(xs, &self.weight, &self.bias, self.eps as f32)
        } else if mode.is_train() {
            layer_norm_differentiable(xs, &self.weight, &self.bias, self.eps)
        } else {
            candle_nn::ops::layer_norm(&xs.contiguous()?, &self.weight, &self.bias, self.eps as f32)
        }
    }
}

/// LayerNorm over the last dimension from primitives with a backward, in f32 for stability.
pub fn layer_norm_differentiable(
    xs: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let dtype = xs.dtype();
    let xs = xs.to_dtype(DType::F32)?;
    let mean = xs.mean_keepdim(D::Minus1)?;
    let centered = xs.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed
        .to_dtype(dtype)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

/// Which tokens attend to which, in the form the attention path at hand takes.
pub enum AttentionMask {
    /// The fused kernel over a padded batch: the `[batch, seq]` mask itself.
    Fused(Tensor),
    /// candle's ops over a padded batch: `[batch, 1, 1, seq]`, 0 for tokens and -1e4 for
    /// padding, added to the scores.
    Composed(Tensor),
    /// The fused kernel over sequences of these lengths packed back to back (inference).
    Packed(Vec<usize>),
}

impl AttentionMask {
    /// For a padded batch's `[batch, seq]` mask (1 token, 0 padding).
    pub fn padded(mask: &Tensor) -> Result<Self> {
        if super::fused::applies(mask) {
            return Ok(AttentionMask::Fused(mask.clone()));
        }
        let (b, t) = mask.dims2()?;
        // -1e4 underflows nothing in f16/bf16 and zeroes padding after softmax in f32.
        let bias = ((mask.ones_like()? - mask)? * -1e4)?.reshape((b, 1, 1, t))?;
        Ok(AttentionMask::Composed(bias))
    }
}

/// A padded batch with its padding rows taken out, for inference on CPU: linear layers,
/// LayerNorm and GELU then skip the padding instead of computing rows nobody reads.
pub struct Packing {
    /// Tokens per sequence.
    pub lengths: Vec<usize>,
    /// Which rows of the flattened `[batch·seq]` batch are tokens.
    rows: Tensor,
    batch: usize,
    seq: usize,
}

impl Packing {
    /// `None` where packing does not apply: training (dropout masks are drawn over the padded
    /// layout, the same on every device), other devices or dtypes, or no padding.
    pub fn for_inference(batch: &PaddedBatch, mode: &Mode) -> Result<Option<Self>> {
        if mode.is_train() || !super::fused::applies(&batch.mask) {
            return Ok(None);
        }
        let (batch_size, seq) = batch.ids.dims2()?;
        if batch.lengths.iter().all(|&l| l == seq) {
            return Ok(None);
        }
        let rows: Vec<u32> = batch
            .lengths
            .iter()
            .enumerate()
            .flat_map(|(b, &len)| (0..len).map(move |t| (b * seq + t) as u32))
            .collect();
        Ok(Some(Packing {
            lengths: batch.lengths.clone(),
            rows: Tensor::new(rows, batch.mask.device())?,
            batch: batch_size,
            seq,
        }))
    }

    /// `[batch, seq, hidden]` → `[tokens, hidden]`.
    pub fn pack(&self, xs: &Tensor) -> Result<Tensor> {
        let hidden = xs.dim(2)?;
        xs.reshape((self.batch * self.seq, hidden))?
            .index_select(&self.rows, 0)
    }

    /// `[tokens, hidden]` → `[batch, seq, hidden]`, zeros in the padding.
    pub fn unpack(&self, xs: &Tensor) -> Result<Tensor> {
        let hidden = xs.dim(1)?;
        Tensor::zeros((self.batch * self.seq, hidden), xs.dtype(), xs.device())?
            .index_add(&self.rows, xs, 0)?
            .reshape((self.batch, self.seq, hidden))
    }
}

/// Softmax over the last dimension for the unfused path.
pub fn softmax_last_dim(xs: &Tensor, mode: &Mode) -> Result<Tensor> {
    if mode.is_train() {
        softmax_differentiable(xs)
    } else {
        candle_nn::ops::softmax_last_dim(&xs.contiguous()?)
    }
}

/// Softmax from primitives with a backward, in f32 for stability (as torch's autocast); the
/// subtracted max is detached, which leaves the gradient unchanged (softmax is
/// shift-invariant) and keeps exp from overflowing.
pub fn softmax_differentiable(xs: &Tensor) -> Result<Tensor> {
    let dtype = xs.dtype();
    let xs = xs.to_dtype(DType::F32)?;
    let max = xs.max_keepdim(D::Minus1)?.detach();
    let exp = xs.broadcast_sub(&max)?.exp()?;
    exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?
        .to_dtype(dtype)
}

/// The activations BERT-family configs name in `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU (erf), HF's "gelu".
    Gelu,
    /// tanh approximation: "gelu_new", "gelu_pytorch_tanh", "gelu_fast".
    GeluTanh,
    Relu,
}

impl Activation {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            _ => None,
        }
    }

    /// All have a backward.
    pub fn forward(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Gelu if super::fused::applies(xs) => super::fused::gelu(xs),
            Activation::Gelu => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
            Activation::Relu => xs.relu(),
        }
    }
}

/// Row lookup in an embedding table (`index_select` has a backward into the table).
#[derive(Clone)]
pub struct Embedding {
    table: Tensor,
}

impl Embedding {
    pub fn load(w: &Weights, name: &str) -> Result<Self> {
        Ok(Embedding {
            table: w.get(name)?,
        })
    }

    pub fn rows(&self) -> Result<usize> {
        self.table.dim(0)
    }

    /// `ids` of any shape → `[..., hidden]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let mut out = ids.dims().to_vec();
        out.push(self.table.dim(1)?);
        self.table
            .index_select(&ids.flatten_all()?, 0)?
            .reshape(out)
    }
}

/// A `[batch, seq]` u32 tensor from row-major ids.
pub fn ids_tensor(ids: Vec<u32>, batch: usize, seq: usize, device: &Device) -> Result<Tensor> {
    Tensor::from_vec(ids, (batch, seq), device)
}
