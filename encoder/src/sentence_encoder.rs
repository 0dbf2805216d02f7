//! `SentenceEncoder`: a sentence-transformers folder loaded as one model for training and
//! inference — tokenize, transformer, pooling — with length-sorted batched `embed` and an
//! atomic `save`.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use crate::bert::{BertEncoder, Positions};
use crate::device::warn_if_slow;
use crate::embed::{batch_per_core, token_budget_batches};
use crate::error::{Error, Result};
use crate::folder::{Architecture, ModelCard, ModelFolder};
use crate::layers::{Dropout, Mode};
use crate::tokenize::{PaddedBatch, TextTokenizer};
use crate::weights::Weights;
use crate::{pooling, roberta};

pub struct SentenceEncoder {
    pub folder: ModelFolder,
    pub tokenizer: TextTokenizer,
    weights: Weights,
    encoder: BertEncoder,
    device: Device,
    /// The weights' dtype.
    dtype: DType,
    /// Mixed precision (see [`Self::set_autocast`]).
    autocast: Option<DType>,
}

impl SentenceEncoder {
    /// Loads a sentence-transformers folder in f32.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_with_dtype(dir, device, DType::F32)
    }

    pub fn load_with_dtype(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        warn_if_slow(dtype, device);
        let folder = ModelFolder::load(dir)?;
        let weights = Weights::load(&folder.weights_path(), device, dtype)?;
        let encoder = build_encoder(&folder, &weights)?;
        if folder.sbert.max_seq_length > encoder.max_positions {
            return Err(Error::model(
                dir,
                format!(
                    "max_seq_length {} exceeds the model's {} positions",
                    folder.sbert.max_seq_length, encoder.max_positions
                ),
            ));
        }
        let tokenizer = TextTokenizer::load(
            &folder.tokenizer_path(),
            folder.sbert.max_seq_length,
            folder.sbert.do_lower_case,
        )?;
        Ok(SentenceEncoder {
            folder,
            tokenizer,
            weights,
            encoder,
            device: device.clone(),
            dtype,
            autocast: None,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The dtype the transformer computes in: the weights' own, or the autocast one.
    pub fn compute_dtype(&self) -> DType {
        self.autocast.unwrap_or(self.dtype)
    }

    /// Mixed-precision training: the weights stay f32 (the optimizer updates them) and each
    /// forward pass runs the transformer on a `dtype` copy of them (bf16/f16 for GPUs),
    /// while pooling, normalization and the loss stay in f32.
    pub fn set_autocast(&mut self, dtype: DType) -> Result<()> {
        if self.dtype != DType::F32 {
            return Err(Error::Invalid(format!(
                "autocast needs f32 weights, not {:?}",
                self.dtype
            )));
        }
        warn_if_slow(dtype, &self.device);
        self.autocast = (dtype != DType::F32).then_some(dtype);
        Ok(())
    }

    /// Embedding dimension after pooling.
    pub fn dim(&self) -> usize {
        self.folder.pooling.output_dim()
    }

    pub fn normalizes(&self) -> bool {
        self.folder.normalize
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The dropout probabilities from `config.json`, for [`Mode::Train`].
    pub fn dropout(&self, seed: u64) -> Dropout {
        Dropout::new(
            seed,
            self.encoder.hidden_dropout,
            self.encoder.attention_dropout,
        )
    }

    /// Changes the truncation length, for this encoder and for the folder it saves.
    pub fn set_max_seq_length(&mut self, max_seq_length: usize) -> Result<()> {
        if max_seq_length == 0 || max_seq_length > self.encoder.max_positions {
            return Err(Error::Invalid(format!(
                "max_seq_length {max_seq_length} must be between 1 and the model's {} positions",
                self.encoder.max_positions
            )));
        }
        self.tokenizer.set_max_seq_length(max_seq_length)?;
        self.folder.sbert.max_seq_length = max_seq_length;
        Ok(())
    }

    /// Training mode with the model's dropout, seeded.
    pub fn train_mode(&self, seed: u64) -> Mode {
        Mode::train(self.dropout(seed))
    }

    /// Turns the parameters into trainable variables (see [`Weights::make_trainable`]).
    pub fn make_trainable(&mut self) -> Result<Vec<(String, Var)>> {
        let vars = self.weights.make_trainable()?;
        self.encoder = build_encoder(&self.folder, &self.weights)?;
        Ok(vars)
    }

    /// Pads token id sequences into a batch for [`Self::forward`].
    pub fn pad(&self, seqs: &[&[u32]]) -> Result<PaddedBatch> {
        PaddedBatch::new(
            seqs,
            self.tokenizer.pad_id(),
            self.compute_dtype(),
            &self.device,
        )
    }

    /// Sentence embeddings `[batch, dim]` in f32 (normalized iff the folder has a Normalize
    /// module). Differentiable in [`Mode::Train`].
    pub fn forward(&self, batch: &PaddedBatch, mode: &mut Mode) -> Result<Tensor> {
        let autocast;
        let encoder = match self.autocast {
            Some(dtype) => {
                // Cast per pass: the optimizer changes the f32 weights between passes.
                autocast = build_encoder(&self.folder, &self.weights.cast(dtype)?)?;
                &autocast
            }
            None => &self.encoder,
        };
        let states = encoder.forward(batch, mode)?;
        // Sums over tokens in f32: bf16 would round them, f16's -1e9 padding score overflows.
        let states = states.to_dtype(DType::F32)?;
        let mask = batch.mask.to_dtype(DType::F32)?;
        let pooled = self.folder.pooling.pool(&states, &mask)?;
        let out = if self.folder.normalize {
            pooling::normalize(&pooled)?
        } else {
            pooled
        };
        Ok(out)
    }

    /// Embeds texts in inference mode: tokenized in parallel, sorted by length so batches carry
    /// little padding, and returned in input order as a row-major `[texts × dim]` f32 matrix.
    pub fn embed(&self, texts: &[&str], batch_size: usize) -> Result<Vec<f32>> {
        self.embed_within(texts, batch_size, usize::MAX)
    }

    /// As [`Self::embed`], from token ids.
    pub fn embed_ids(&self, ids: &[Vec<u32>], batch_size: usize) -> Result<Vec<f32>> {
        self.embed_ids_within(ids, batch_size, usize::MAX)
    }

    /// As [`Self::embed`], with batches of at most `max_texts` texts and `max_tokens` padded
    /// tokens (texts × longest): many short texts or a few long ones per forward pass.
    pub fn embed_within(
        &self,
        texts: &[&str],
        max_texts: usize,
        max_tokens: usize,
    ) -> Result<Vec<f32>> {
        let ids = self.tokenizer.encode_batch(texts)?;
        self.embed_ids_within(&ids, max_texts, max_tokens)
    }

    fn embed_ids_within(
        &self,
        ids: &[Vec<u32>],
        max_texts: usize,
        max_tokens: usize,
    ) -> Result<Vec<f32>> {
        let dim = self.dim();
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let cores = if self.device.is_cpu() {
            rayon::current_num_threads()
        } else {
            1
        };
        // With a batch per core, a few large batches would leave cores idle at the end:
        // cut the work into at least four batches per core.
        let max_tokens = if cores > 1 {
            let total: usize = ids.iter().map(|s| s.len()).sum();
            max_tokens.min(total.div_ceil(4 * cores).max(1))
        } else {
            max_tokens
        };
        let batches = token_budget_batches(&order, ids, max_texts, max_tokens);
        let embed_batch = |group: &[usize]| -> Result<Vec<f32>> {
            let seqs: Vec<&[u32]> = group.iter().map(|&i| ids[i].as_slice()).collect();
            let batch = self.pad(&seqs)?;
            Ok(self
                .forward(&batch, &mut Mode::Infer)?
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        };
        let mut out = vec![0f32; ids.len() * dim];
        let mut place = |group: &[usize], emb: &[f32]| {
            for (row, &i) in group.iter().enumerate() {
                out[i * dim..(i + 1) * dim].copy_from_slice(&emb[row * dim..(row + 1) * dim]);
            }
        };
        let cores = cores.min(batches.len());
        if cores < 2 {
            for group in batches {
                place(group, &embed_batch(group)?);
            }
            return Ok(out);
        }
        for (k, emb) in batch_per_core(cores, batches.len(), |k| embed_batch(batches[k]))? {
            place(batches[k], &emb);
        }
        Ok(out)
    }

    /// Saves the model (current weights) as a sentence-transformers folder at `dest`,
    /// atomically: it is written beside `dest` and swapped into place.
    pub fn save(&self, dest: &Path, card: &ModelCard) -> Result<()> {
        common::atomic::replace_dir(dest, |tmp| {
            self.folder.write_layout(tmp, card)?;
            self.weights.save(&tmp.join("model.safetensors"))
        })
    }
}

fn build_encoder(folder: &ModelFolder, weights: &Weights) -> Result<BertEncoder> {
    let built = match folder.architecture {
        Architecture::Bert => BertEncoder::load(weights, &folder.config, Positions::FromZero),
        Architecture::Roberta => roberta::load(weights, &folder.config),
    };
    built.map_err(|e| Error::model(&folder.dir, format!("cannot build the encoder: {e}")))
}
