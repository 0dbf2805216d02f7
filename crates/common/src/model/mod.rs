//! The sentence encoder: one implementation for training and inference.
//!
//! `layers` holds the building blocks (each differentiable when training), one file per
//! architecture (`bert`, `roberta`) builds the transformer, `pooling` and `tokenize` do what
//! sentence-transformers' Pooling/Normalize modules and tokenizer call do, `folder` reads and
//! writes the sentence-transformers layout, and `weights` keeps tensors under their HF names.

pub mod attention;
pub mod bert;
pub mod folder;
pub mod fused;
pub mod kernels;
pub mod layers;
pub mod pooling;
pub mod roberta;
pub mod tokenize;
pub mod weights;

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

pub use folder::{Architecture, ModelCard, ModelFolder, TuningStage};
pub use layers::{Dropout, Mode};
pub use tokenize::{PaddedBatch, TextTokenizer};
pub use weights::Weights;

use crate::error::{Error, Result};
use bert::{BertEncoder, Positions};

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
    /// atomically: it is written beside `dest` and renamed into place.
    pub fn save(&self, dest: &Path, card: &ModelCard) -> Result<()> {
        let tmp = crate::parquet_io::temp_path(dest);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        let result = self
            .folder
            .write_layout(&tmp, card)
            .and_then(|()| self.weights.save(&tmp.join("model.safetensors")));
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if dest.exists() {
            let old = dest.with_extension("replaced");
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(dest, &old).map_err(|e| Error::io(dest, e))?;
            std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))?;
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        } else {
            std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))?;
        }
        Ok(())
    }
}

/// Half precision on CPU takes candle's generic ops, not the fused f32 kernels.
fn warn_if_slow(dtype: DType, device: &Device) {
    if dtype != DType::F32 && device.is_cpu() {
        tracing::warn!(
            "{dtype:?} on CPU runs candle's unfused ops and is slower than f32; it is meant for GPUs"
        );
    }
}

/// Call first thing in the `main` of a binary that only infers: inference on CPU runs one
/// batch per core ([`batch_per_core`]), so candle's own pool for its elementwise ops (the
/// embedding sums, pooling) would only add a thread that spins between ops on cores that are
/// already busy: 1.4 % of CPU samples went to its spin loop and barrier. An explicit
/// `CANDLE_NUM_THREADS` is left alone. Before any thread starts, as it sets the environment.
pub fn run_candle_ops_inline() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// One single-thread rayon pool per thread of the global pool, started once: long-lived
/// threads keep their allocator heaps, so memory freed by one call is reused by the next
/// rather than left behind in the heaps of exited threads.
fn core_pools() -> Result<&'static [rayon::ThreadPool]> {
    static POOLS: std::sync::OnceLock<Vec<rayon::ThreadPool>> = std::sync::OnceLock::new();
    if let Some(pools) = POOLS.get() {
        return Ok(pools);
    }
    let pools = (0..rayon::current_num_threads())
        .map(|i| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(move |_| format!("embed-{i}"))
                .build()
                .map_err(|e| Error::Invalid(format!("cannot start a worker thread: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(POOLS.get_or_init(|| pools))
}

/// Runs `work(0..jobs)` on `cores` threads that each take the next job and run it alone, in a
/// one-thread rayon pool so the kernels inside do not split it further. On CPU this beats
/// splitting every matmul and kernel of one batch across cores: a forward pass is ~100 ops,
/// each of which would end in a barrier, and one-core matmuls skip the partitioning.
fn batch_per_core<T: Send>(
    cores: usize,
    jobs: usize,
    work: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<(usize, T)>> {
    let pools = core_pools()?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = |pool: &rayon::ThreadPool| -> Result<Vec<(usize, T)>> {
        pool.install(|| {
            let mut done = Vec::new();
            loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if k >= jobs {
                    return Ok(done);
                }
                match work(k) {
                    Ok(v) => done.push((k, v)),
                    Err(e) => {
                        next.store(jobs, std::sync::atomic::Ordering::Relaxed); // stop the others
                        return Err(e);
                    }
                }
            }
        })
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = pools[..cores.min(pools.len())]
            .iter()
            .map(|pool| s.spawn(|| worker(pool)))
            .collect();
        let mut all = Vec::with_capacity(jobs);
        for h in handles {
            all.extend(h.join().expect("embedding worker panicked")?);
        }
        Ok(all)
    })
}

/// Splits `order` (longest text first) into consecutive batches of at most `max_texts` texts
/// whose padded size (count × first, i.e. longest, length) stays within `max_tokens`; a text
/// longer than the budget goes alone.
fn token_budget_batches<'a>(
    order: &'a [usize],
    ids: &[Vec<u32>],
    max_texts: usize,
    max_tokens: usize,
) -> Vec<&'a [usize]> {
    let mut batches = Vec::new();
    let mut rest = order;
    while !rest.is_empty() {
        let longest = ids[rest[0]].len().max(1);
        let n = (max_tokens / longest)
            .clamp(1, max_texts.max(1))
            .min(rest.len());
        let (batch, tail) = rest.split_at(n);
        batches.push(batch);
        rest = tail;
    }
    batches
}

fn build_encoder(folder: &ModelFolder, weights: &Weights) -> Result<BertEncoder> {
    let built = match folder.architecture {
        Architecture::Bert => BertEncoder::load(weights, &folder.config, Positions::FromZero),
        Architecture::Roberta => roberta::load(weights, &folder.config),
    };
    built.map_err(|e| Error::model(&folder.dir, format!("cannot build the encoder: {e}")))
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}

/// The floating-point format the transformer computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// What sentence-transformers computes in; the only fast format on CPU.
    #[default]
    F32,
    /// bfloat16, for GPUs (Ampere and later): f32's range, 8 bits of mantissa.
    Bf16,
    /// float16, for GPUs: more mantissa than bf16 but a range that ends at 65504.
    F16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }
}

/// Parses `cpu` or `cuda:N` (`cuda` means `cuda:0`).
pub fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0)?),
        s => match s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => Device::new_cuda(n).map_err(|e| {
                Error::Invalid(format!(
                    "device {s}: {e} (CUDA needs a build with `--features cuda` and a GPU)"
                ))
            }),
            None => Err(Error::Invalid(format!(
                "unknown device {s:?}: use cpu or cuda:N"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{batch_per_core, token_budget_batches};
    use crate::error::Error;

    #[test]
    fn batch_per_core_runs_every_job_once_on_one_thread_pools_and_stops_on_error() {
        let done = batch_per_core(2, 50, |k| Ok((k * 3, rayon::current_num_threads()))).unwrap();
        let mut jobs: Vec<usize> = done.iter().map(|(k, _)| *k).collect();
        jobs.sort_unstable();
        assert_eq!(jobs, (0..50).collect::<Vec<_>>());
        assert!(done
            .iter()
            .all(|&(k, (v, threads))| v == k * 3 && threads == 1));
        let failed = batch_per_core(2, 50, |k| {
            if k == 7 {
                Err(Error::Invalid("job 7".into()))
            } else {
                Ok(k)
            }
        });
        assert!(matches!(failed, Err(Error::Invalid(m)) if m == "job 7"));
    }

    #[test]
    fn batches_respect_the_text_and_token_budgets() {
        let ids: Vec<Vec<u32>> = [100, 90, 10, 10, 10, 5, 300]
            .iter()
            .map(|&n| vec![0; n])
            .collect();
        let order = [6, 0, 1, 2, 3, 4, 5];
        let batches = token_budget_batches(&order, &ids, 3, 200);
        // 300 tokens exceed the budget and go alone; 2 × 100 fit; then three texts at most.
        assert_eq!(batches, vec![&[6][..], &[0, 1], &[2, 3, 4], &[5]]);
    }
}
