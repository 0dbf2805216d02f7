//! The trainer: the trainable encoder, its optimizer, and one optimization step (forward,
//! loss, backward in one pass or by GradCache, f16 loss scaling, clipping, AdamW).

use candle_core::{DType, Tensor, Var};
use encoder::{Dropout, Mode, SentenceEncoder};

use crate::data::Examples;
use crate::loss;
use crate::optim::{
    clip_grad_norm, grads_of, scaled_backward, unscale, AdamW, AdamWConfig, Grads, LossScale,
};
use crate::{Error, Options};

/// Token ids of every text of a split, per column (anchor, positive[, negative] or
/// sentence1, sentence2), with the scores of scored pairs.
pub struct Tokenized {
    pub columns: Vec<Vec<Vec<u32>>>,
    pub scores: Option<Vec<f32>>,
}

/// Tokenizes the examples at `idx`.
pub fn tokenize(
    encoder: &SentenceEncoder,
    examples: &Examples,
    idx: &[usize],
) -> Result<Tokenized, Error> {
    let enc = |texts: Vec<&str>| encoder.tokenizer.encode_batch(&texts);
    Ok(match examples {
        Examples::Pairs(p) => {
            let mut columns = vec![
                enc(idx.iter().map(|&i| p[i].anchor.as_str()).collect())?,
                enc(idx.iter().map(|&i| p[i].positive.as_str()).collect())?,
            ];
            if idx.iter().all(|&i| p[i].negative.is_some()) && !idx.is_empty() {
                columns.push(enc(idx
                    .iter()
                    .map(|&i| p[i].negative.as_deref().unwrap())
                    .collect())?);
            }
            Tokenized {
                columns,
                scores: None,
            }
        }
        Examples::Scored(s) => Tokenized {
            columns: vec![
                enc(idx.iter().map(|&i| s[i].sentence1.as_str()).collect())?,
                enc(idx.iter().map(|&i| s[i].sentence2.as_str()).collect())?,
            ],
            scores: Some(idx.iter().map(|&i| s[i].score).collect()),
        },
    })
}

/// Learning rate after `step` optimizer steps, as transformers' linear schedule with warmup.
pub fn learning_rate(base: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        base * step as f64 / warmup.max(1) as f64
    } else {
        base * (total.saturating_sub(step) as f64 / total.saturating_sub(warmup).max(1) as f64)
            .max(0.0)
    }
}

/// The seed of one forward pass's dropout: a function of the step and the piece of the batch,
/// so a resumed run and GradCache's second pass draw the same masks.
pub fn dropout_seed(seed: u64, step: u64, column: usize, chunk: usize) -> u64 {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    for v in [step, column as u64, chunk as u64] {
        x = (x ^ v).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 31;
    }
    x
}

/// The seed of an epoch's batch order.
pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    dropout_seed(seed, u64::MAX, epoch, usize::MAX)
}

/// What one optimization step did.
#[derive(Debug, Clone, Copy)]
pub struct StepOutcome {
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// False when f16 gradients overflowed and the update was skipped.
    pub applied: bool,
}

/// The trainable encoder, its optimizer, and what one optimization step needs.
pub struct Trainer<'a> {
    opts: &'a Options,
    pub encoder: SentenceEncoder,
    pub vars: Vec<(String, Var)>,
    pub optimizer: AdamW,
    hidden_p: f32,
    attention_p: f32,
}

impl<'a> Trainer<'a> {
    /// Makes `encoder` trainable, with `opts`' dropout, seed, loss and training length
    /// (`max_seq_length`, default the model's own: the tokenizer truncates there while
    /// training).
    pub fn new(opts: &'a Options, mut encoder: SentenceEncoder) -> Result<Self, Error> {
        let length = opts
            .max_seq_length
            .unwrap_or(encoder.folder.sbert.max_seq_length);
        encoder.set_max_seq_length(length)?;
        let vars = encoder.make_trainable()?;
        encoder.set_autocast(opts.precision.dtype())?;
        let default = encoder.dropout(0);
        let optimizer = AdamW::new(
            &vars,
            AdamWConfig {
                weight_decay: opts.weight_decay,
                ..AdamWConfig::default()
            },
        )?;
        Ok(Trainer {
            opts,
            hidden_p: opts.dropout.unwrap_or(default.hidden_p),
            attention_p: opts.dropout.unwrap_or(default.attention_p),
            encoder,
            vars,
            optimizer,
        })
    }

    fn embed_train(&self, ids: &[&[u32]], seed: u64) -> Result<Tensor, Error> {
        let batch = self.encoder.pad(ids)?;
        let mut mode = Mode::train(Dropout::new(seed, self.hidden_p, self.attention_p));
        Ok(self.encoder.forward(&batch, &mut mode)?)
    }

    fn scores(&self, data: &Tokenized, batch: &[usize]) -> Result<Option<Tensor>, Error> {
        Ok(match &data.scores {
            Some(s) => {
                let v: Vec<f32> = batch.iter().map(|&i| s[i]).collect();
                Some(Tensor::from_vec(v, batch.len(), self.encoder.device())?)
            }
            None => None,
        })
    }

    /// Loss and gradients of one batch, in one pass.
    /// `loss_scale` multiplies the loss before back-propagation (f16's loss scaling; 1
    /// otherwise); the gradients returned are unscaled.
    pub fn batch_grads(
        &self,
        data: &Tokenized,
        batch: &[usize],
        step: u64,
        loss_scale: f64,
    ) -> Result<(f64, Grads), Error> {
        let mut columns = Vec::with_capacity(data.columns.len());
        for (c, col) in data.columns.iter().enumerate() {
            let ids: Vec<&[u32]> = batch.iter().map(|&i| col[i].as_slice()).collect();
            columns.push(self.embed_train(&ids, dropout_seed(self.opts.seed, step, c, 0))?);
        }
        let loss = self
            .opts
            .loss
            .compute(&columns, self.scores(data, batch)?.as_ref())?;
        let mut grads = grads_of(&self.vars, &scaled_backward(&loss, loss_scale)?);
        unscale(&mut grads, loss_scale)?;
        Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, grads))
    }

    /// The same loss and gradients by GradCache ([`loss::cached_grads`]), in mini-batches
    /// of `mini` examples.
    pub fn batch_grads_cached(
        &self,
        data: &Tokenized,
        batch: &[usize],
        step: u64,
        mini: usize,
        loss_scale: f64,
    ) -> Result<(f64, Grads), Error> {
        let embed = |c: usize, k: usize, rows: std::ops::Range<usize>| {
            let ids: Vec<&[u32]> = batch[rows]
                .iter()
                .map(|&i| data.columns[c][i].as_slice())
                .collect();
            self.embed_train(&ids, dropout_seed(self.opts.seed, step, c, k))
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        };
        let scores = self.scores(data, batch)?;
        Ok(loss::cached_grads(
            &self.opts.loss,
            &self.vars,
            data.columns.len(),
            batch.len(),
            mini,
            scores.as_ref(),
            loss_scale,
            embed,
        )?)
    }

    /// One optimization step on `batch` at learning rate `lr`: gradients (by GradCache when
    /// `--mini-batch-size` is below the batch), clipping, and the AdamW update unless f16's
    /// `loss_scale` saw the gradients overflow.
    pub fn step(
        &mut self,
        data: &Tokenized,
        batch: &[usize],
        step: u64,
        lr: f64,
        loss_scale: &mut Option<LossScale>,
    ) -> Result<StepOutcome, Error> {
        let scale = loss_scale.map_or(1.0, |s| s.scale);
        let (loss, mut grads) = match self.opts.mini_batch_size {
            Some(m) if m < batch.len() => self.batch_grads_cached(data, batch, step, m, scale)?,
            _ => self.batch_grads(data, batch, step, scale)?,
        };
        let grad_norm = clip_grad_norm(&mut grads, self.opts.max_grad_norm)?;
        let applied = loss_scale
            .as_mut()
            .is_none_or(|s| s.update(grad_norm.is_finite()));
        if applied {
            self.optimizer.step(&grads, lr)?;
        } else {
            tracing::debug!(
                "step {}: f16 gradients overflowed; update skipped, loss scale now {}",
                step + 1,
                loss_scale.map_or(1.0, |s| s.scale)
            );
        }
        Ok(StepOutcome {
            loss,
            grad_norm,
            applied,
        })
    }
}
