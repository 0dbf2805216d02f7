//! tune-embeddings: fine-tunes the `common` encoder on pairs (MNRL, optionally cached) or on
//! scored pairs (CoSENT), evaluates on a held-out split, checkpoints, resumes exactly, and
//! saves a sentence-transformers folder.

pub mod batching;
pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod loss;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use common::model::{Dropout, Mode, ModelCard, Precision, SentenceEncoder, TuningStage};
use common::provenance::sha256_file;
use common::train::{
    accumulate, clip_grad_norm, grads_of, scale_grads, AdamW, AdamWConfig, Grads, LossScale,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use checkpoint::{Best, State};
use data::{Examples, Source};
use eval::Metrics;
pub use loss::Loss;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Common(#[from] common::Error),
    #[error("{0}")]
    Data(String),
    #[error("{0}")]
    Invalid(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Common(e) => e.is_bad_input(),
            Error::Data(_) | Error::Invalid(_) | Error::Checkpoint(_) => true,
            Error::Candle(_) => false,
        }
    }
}

/// How many training examples are held out for evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum EvalSplit {
    Rows(usize),
    Fraction(f64),
}

#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub base_model: PathBuf,
    pub train: Source,
    pub out: PathBuf,
    /// Default: `<out>.checkpoints` beside the output.
    pub checkpoint_dir: Option<PathBuf>,
    pub resume: bool,
    pub loss: Loss,
    pub epochs: usize,
    pub batch_size: usize,
    /// GradCache mini-batch size; `None` embeds each batch in one pass.
    pub mini_batch_size: Option<usize>,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_ratio: f64,
    pub max_grad_norm: f64,
    pub max_seq_length: usize,
    pub seed: u64,
    /// Overrides the model's hidden and attention dropout.
    pub dropout: Option<f32>,
    pub eval: EvalSplit,
    /// Also evaluate every this many steps.
    pub eval_steps: Option<u64>,
    /// Metric that picks the saved model (higher is better).
    pub best_metric: Option<String>,
    pub checkpoint_steps: Option<u64>,
    /// Stop after this many steps in this invocation (checkpointed; continue with `resume`).
    pub stop_after_steps: Option<u64>,
    pub device: String,
    /// What the transformer computes in; the weights and optimizer stay f32 (autocast).
    pub precision: Precision,
}

impl Options {
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

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub output: PathBuf,
    pub steps: u64,
    pub finished: bool,
    pub train_examples: usize,
    pub eval_examples: usize,
    /// Evaluation before any training (absent when resumed past it).
    pub before: Option<Metrics>,
    /// The evaluation of the saved model.
    pub best: Option<Metrics>,
    pub last_loss: Option<f64>,
    pub pairs_per_second: f64,
}

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

fn texts_of(examples: &Examples, i: usize) -> Vec<&str> {
    match examples {
        Examples::Pairs(p) => {
            let mut t = vec![p[i].anchor.as_str(), p[i].positive.as_str()];
            t.extend(p[i].negative.as_deref());
            t
        }
        Examples::Scored(s) => vec![s[i].sentence1.as_str(), s[i].sentence2.as_str()],
    }
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

/// Gradients of `loss × scale` (f16's loss scaling; a scale of 1 is the plain loss).
fn scaled_backward(loss: &Tensor, scale: f64) -> Result<candle_core::backprop::GradStore, Error> {
    Ok(if scale == 1.0 {
        loss.backward()?
    } else {
        (loss * scale)?.backward()?
    })
}

/// Undoes [`scaled_backward`]'s scale on the gradients.
fn unscale(grads: &mut Grads, scale: f64) -> Result<(), Error> {
    if scale != 1.0 {
        scale_grads(grads, 1.0 / scale)?;
    }
    Ok(())
}

/// The seed of one forward pass's dropout: a function of the step and the piece of the batch,
/// so a resumed run and GradCache's second pass draw the same masks.
fn dropout_seed(seed: u64, step: u64, column: usize, chunk: usize) -> u64 {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    for v in [step, column as u64, chunk as u64] {
        x = (x ^ v).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 31;
    }
    x
}

/// The trainable encoder and what one optimization step needs from it.
pub struct Trainer<'a> {
    opts: &'a Options,
    pub encoder: SentenceEncoder,
    pub vars: Vec<(String, Var)>,
    hidden_p: f32,
    attention_p: f32,
}

impl<'a> Trainer<'a> {
    /// Makes `encoder` trainable, with `opts`' dropout, seed and loss.
    pub fn new(opts: &'a Options, mut encoder: SentenceEncoder) -> Result<Self, Error> {
        encoder.set_max_seq_length(opts.max_seq_length)?;
        let vars = encoder.make_trainable()?;
        encoder.set_autocast(opts.precision.dtype())?;
        let default = encoder.dropout(0);
        Ok(Trainer {
            opts,
            hidden_p: opts.dropout.unwrap_or(default.hidden_p),
            attention_p: opts.dropout.unwrap_or(default.attention_p),
            encoder,
            vars,
        })
    }

    fn mode(&self, seed: u64) -> Mode {
        Mode::train(Dropout::new(seed, self.hidden_p, self.attention_p))
    }

    fn embed_train(&self, ids: &[&[u32]], seed: u64) -> Result<Tensor, Error> {
        let batch = self.encoder.pad(ids)?;
        Ok(self.encoder.forward(&batch, &mut self.mode(seed))?)
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

    /// The same loss and gradients with GradCache: embed mini-batches without keeping their
    /// graphs, differentiate the loss with respect to the embeddings, then re-run each
    /// mini-batch (same dropout masks) and back-propagate its share.
    pub fn batch_grads_cached(
        &self,
        data: &Tokenized,
        batch: &[usize],
        step: u64,
        mini: usize,
        loss_scale: f64,
    ) -> Result<(f64, Grads), Error> {
        let mut leaves: Vec<Var> = Vec::with_capacity(data.columns.len());
        for (c, col) in data.columns.iter().enumerate() {
            let mut parts = Vec::new();
            for (k, chunk) in batch.chunks(mini).enumerate() {
                let ids: Vec<&[u32]> = chunk.iter().map(|&i| col[i].as_slice()).collect();
                parts.push(
                    self.embed_train(&ids, dropout_seed(self.opts.seed, step, c, k))?
                        .detach(),
                );
            }
            leaves.push(loss::as_leaf(&Tensor::cat(&parts, 0)?)?);
        }
        let columns: Vec<Tensor> = leaves.iter().map(|v| v.as_tensor().clone()).collect();
        let loss = self
            .opts
            .loss
            .compute(&columns, self.scores(data, batch)?.as_ref())?;
        let rep_grads = scaled_backward(&loss, loss_scale)?;
        let mut total: Grads = vec![None; self.vars.len()];
        for (c, col) in data.columns.iter().enumerate() {
            let g = rep_grads
                .get(leaves[c].as_tensor())
                .ok_or_else(|| Error::Invalid("loss does not depend on a column".into()))?;
            for (k, chunk) in batch.chunks(mini).enumerate() {
                let ids: Vec<&[u32]> = chunk.iter().map(|&i| col[i].as_slice()).collect();
                let out = self.embed_train(&ids, dropout_seed(self.opts.seed, step, c, k))?;
                let g_part = g.narrow(0, k * mini, chunk.len())?;
                let surrogate = (out * g_part)?.sum_all()?;
                accumulate(&mut total, grads_of(&self.vars, &surrogate.backward()?))?;
            }
        }
        unscale(&mut total, loss_scale)?;
        Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, total))
    }

    /// Held-out metrics of the current weights.
    pub fn evaluate(&self, data: &Tokenized) -> Result<Metrics, Error> {
        let dim = self.encoder.dim();
        let embed = |c: usize| self.encoder.embed_ids(&data.columns[c], 64);
        let (first, second) = (embed(0)?, embed(1)?);
        Ok(match &data.scores {
            Some(s) => eval::scored_metrics(&first, &second, dim, s),
            None => eval::pair_metrics(&first, &second, dim),
        })
    }
}

/// Appends one JSON line to the metrics log.
fn log_line(path: &Path, value: serde_json::Value) -> Result<(), Error> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| common::Error::io(path, e))?;
    writeln!(f, "{value}").map_err(|e| Error::Common(common::Error::io(path, e)))
}

/// Drops log lines of steps after `step` (a resumed run writes them again).
fn truncate_log(path: &Path, step: u64) -> Result<(), Error> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    common::parquet_io::write_atomic(path, kept.as_bytes())?;
    Ok(())
}

pub fn run(opts: &Options) -> Result<Report, Error> {
    validate(opts)?;
    let examples = data::load(&opts.train)?;
    let data_sha = sha256_file(opts.train.path())?;
    if matches!(examples, Examples::Scored(_)) != matches!(opts.loss, Loss::CoSent { .. }) {
        return Err(Error::Invalid(
            "CoSENT trains on scored pairs and MNRL on pairs: pick the loss that fits the data"
                .into(),
        ));
    }

    let (eval_idx, train_idx) = split(examples.len(), opts);
    let eval_n = eval_idx.len();
    if train_idx.len() < opts.batch_size {
        return Err(Error::Invalid(format!(
            "batch size {} is larger than the {} training examples left after holding out {eval_n} for evaluation",
            opts.batch_size,
            train_idx.len()
        )));
    }

    let device = common::model::parse_device(&opts.device)?;
    let encoder = SentenceEncoder::load(&opts.base_model, &device)?;
    let base_sha = sha256_file(&encoder.folder.weights_path())?;
    let trainer = Trainer::new(opts, encoder)?;
    let train = tokenize(&trainer.encoder, &examples, &train_idx)?;
    let eval_data = (eval_n > 0)
        .then(|| tokenize(&trainer.encoder, &examples, &eval_idx))
        .transpose()?;
    let train_texts: Vec<Vec<&str>> = train_idx.iter().map(|&i| texts_of(&examples, i)).collect();
    let best_metric = opts.best_metric.clone().unwrap_or_else(|| match examples {
        Examples::Scored(_) => "spearman".into(),
        Examples::Pairs(_) => "mrr@10".into(),
    });

    let batches_per_epoch =
        batching::epoch_batches(&train_texts, opts.batch_size, epoch_seed(opts.seed, 0)).len();
    let total_steps = (batches_per_epoch * opts.epochs) as u64;
    let warmup = (opts.warmup_ratio * total_steps as f64).ceil() as u64;
    let mut optimizer = AdamW::new(
        &trainer.vars,
        AdamWConfig {
            weight_decay: opts.weight_decay,
            ..AdamWConfig::default()
        },
    )?;

    let ckpt = opts.checkpoint_dir();
    std::fs::create_dir_all(&ckpt).map_err(|e| common::Error::io(&ckpt, e))?;
    let metrics_log = ckpt.join("metrics.jsonl");
    let fingerprint = fingerprint(opts, &data_sha, &base_sha);
    let mut state = State {
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        best: None,
        fingerprint: fingerprint.clone(),
        loss_scale: (opts.precision == Precision::F16).then(LossScale::default),
    };
    if opts.resume && ckpt.join("last/state.json").exists() {
        state = checkpoint::read_state(&ckpt.join("last"))?;
        if state.fingerprint != fingerprint {
            return Err(Error::Checkpoint(format!(
                "{} was written for other data, model or options; start afresh without --resume or use another --checkpoint-dir",
                ckpt.display()
            )));
        }
        checkpoint::restore_vars(
            &trainer.vars,
            &checkpoint::load_tensors(&ckpt.join("last/weights.safetensors"), &device)?,
        )?;
        optimizer.load_state(
            state.optimizer_steps(),
            &checkpoint::load_tensors(&ckpt.join("last/optimizer.safetensors"), &device)?,
        )?;
        truncate_log(&metrics_log, state.step)?;
        tracing::info!(
            "resuming at step {} (epoch {}, batch {})",
            state.step,
            state.epoch + 1,
            state.batch_in_epoch
        );
    } else {
        let _ = std::fs::remove_file(&metrics_log);
    }

    let mut report = Report {
        output: opts.out.clone(),
        steps: state.step,
        finished: false,
        train_examples: train_idx.len(),
        eval_examples: eval_n,
        before: None,
        best: None,
        last_loss: None,
        pairs_per_second: 0.0,
    };

    let evaluate_now = |trainer: &Trainer, state: &mut State| -> Result<Option<Metrics>, Error> {
        let Some(eval_data) = &eval_data else {
            return Ok(None);
        };
        let metrics = trainer.evaluate(eval_data)?;
        let value = *metrics.get(&best_metric).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown --best-metric {best_metric:?} (this data has: {})",
                metrics.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        log_line(
            &metrics_log,
            serde_json::json!({"kind": "eval", "step": state.step, "epoch": state.epoch, "metrics": metrics}),
        )?;
        tracing::info!("step {}: {}", state.step, format_metrics(&metrics));
        if state.best.as_ref().is_none_or(|b| value > b.value) {
            state.best = Some(Best {
                metric: best_metric.clone(),
                value,
                step: state.step,
            });
            checkpoint::replace_dir(&ckpt.join("best"), |dir| {
                checkpoint::save_tensors(
                    &dir.join("weights.safetensors"),
                    checkpoint::var_values(&trainer.vars),
                )?;
                std::fs::write(
                    dir.join("metrics.json"),
                    serde_json::to_vec_pretty(&metrics).expect("json"),
                )
                .map_err(|e| Error::Common(common::Error::io(dir, e)))
            })?;
        }
        Ok(Some(metrics))
    };
    let save_checkpoint = |state: &State, optimizer: &AdamW| -> Result<(), Error> {
        checkpoint::replace_dir(&ckpt.join("last"), |dir| {
            checkpoint::save_tensors(
                &dir.join("weights.safetensors"),
                checkpoint::var_values(&trainer.vars),
            )?;
            checkpoint::save_tensors(&dir.join("optimizer.safetensors"), optimizer.state().1)?;
            checkpoint::write_state(dir, state)
        })
    };

    if state.step == 0 && state.batch_in_epoch == 0 && state.epoch == 0 {
        report.before = evaluate_now(&trainer, &mut state)?;
    }

    let bar = common::progress::bar(total_steps, "steps");
    bar.set_position(state.step);
    let start = Instant::now();
    let mut trained_pairs = 0usize;
    let mut steps_here = 0u64;
    let mut stopped = false;
    'epochs: while state.epoch < opts.epochs {
        let batches = batching::epoch_batches(
            &train_texts,
            opts.batch_size,
            epoch_seed(opts.seed, state.epoch),
        );
        while state.batch_in_epoch < batches.len() {
            if opts.stop_after_steps.is_some_and(|s| steps_here >= s) {
                stopped = true;
                break 'epochs;
            }
            let batch = &batches[state.batch_in_epoch];
            let lr = learning_rate(opts.lr, state.step, warmup, total_steps);
            let scale = state.loss_scale.map_or(1.0, |s| s.scale);
            let (loss, mut grads) = match opts.mini_batch_size {
                Some(m) if m < batch.len() => {
                    trainer.batch_grads_cached(&train, batch, state.step, m, scale)?
                }
                _ => trainer.batch_grads(&train, batch, state.step, scale)?,
            };
            let grad_norm = clip_grad_norm(&mut grads, opts.max_grad_norm)?;
            let apply = match &mut state.loss_scale {
                Some(s) => s.update(grad_norm.is_finite()),
                None => true,
            };
            if apply {
                optimizer.step(&grads, lr)?;
            } else {
                tracing::debug!(
                    "step {}: f16 gradients overflowed; update skipped, loss scale now {}",
                    state.step + 1,
                    state.loss_scale.map_or(1.0, |s| s.scale)
                );
            }
            state.step += 1;
            state.batch_in_epoch += 1;
            steps_here += 1;
            trained_pairs += batch.len();
            report.last_loss = Some(loss);
            let rate = trained_pairs as f64 / start.elapsed().as_secs_f64().max(1e-9);
            log_line(
                &metrics_log,
                serde_json::json!({"kind": "train", "step": state.step, "epoch": state.epoch, "loss": loss, "lr": lr, "grad_norm": grad_norm, "loss_scale": state.loss_scale.map(|s| s.scale), "applied": apply, "pairs_per_second": rate}),
            )?;
            bar.set_position(state.step);
            bar.set_message(format!(
                "epoch {}/{} loss {loss:.4} {rate:.1} pairs/s",
                state.epoch + 1,
                opts.epochs
            ));
            let epoch_done = state.batch_in_epoch == batches.len();
            if opts
                .eval_steps
                .is_some_and(|e| state.step.is_multiple_of(e))
                && !epoch_done
            {
                evaluate_now(&trainer, &mut state)?;
            }
            if epoch_done {
                state.epoch += 1;
                state.batch_in_epoch = 0;
                evaluate_now(&trainer, &mut state)?;
                save_checkpoint(&state, &optimizer)?;
                break;
            } else if opts
                .checkpoint_steps
                .is_some_and(|c| state.step.is_multiple_of(c))
            {
                save_checkpoint(&state, &optimizer)?;
            }
        }
    }
    bar.finish_and_clear();
    report.steps = state.step;
    report.pairs_per_second = trained_pairs as f64 / start.elapsed().as_secs_f64().max(1e-9);
    if stopped {
        save_checkpoint(&state, &optimizer)?;
        tracing::info!(
            "stopped after {steps_here} steps at step {}; continue with --resume",
            state.step
        );
        return Ok(report);
    }

    // The saved model is the best evaluated one (the last one without an evaluation split).
    if state.best.is_some() {
        checkpoint::restore_vars(
            &trainer.vars,
            &checkpoint::load_tensors(&ckpt.join("best/weights.safetensors"), &device)?,
        )?;
        let best = std::fs::read(ckpt.join("best/metrics.json"))
            .map_err(|e| common::Error::io(&ckpt, e))?;
        report.best = serde_json::from_slice(&best).ok();
    }
    // A second stage (CoSENT from the first stage's output) keeps the original base model and
    // the first stage in its card.
    let stage = TuningStage {
        started_from: opts.base_model.display().to_string(),
        data: format!(
            "{} ({} training, {} held-out examples; sha256 {data_sha})",
            opts.train.path().display(),
            train_idx.len(),
            eval_n
        ),
        loss: opts.loss.describe(),
        hyperparameters: serde_json::to_value(opts).expect("options serialize"),
        metrics: serde_json::json!({ "before": report.before, "saved": report.best, "selected_by": best_metric }),
    };
    let card = ModelCard::tuned_from(&opts.base_model, &model_name(&opts.base_model), stage)?;
    trainer.encoder.save(&opts.out, &card)?;
    let args = serde_json::json!({ "options": opts, "base_model_sha256": base_sha, "data_sha256": data_sha, "steps": state.step, "total_steps": total_steps, "warmup_steps": warmup, "best": state.best });
    common::parquet_io::write_atomic(
        &opts.out.join("training_args.json"),
        &serde_json::to_vec_pretty(&args).expect("json"),
    )?;
    if metrics_log.exists() {
        std::fs::copy(&metrics_log, opts.out.join("metrics.jsonl"))
            .map_err(|e| common::Error::io(&metrics_log, e))?;
    }
    record_manifest(&opts.out, &args)?;
    report.finished = true;
    Ok(report)
}

/// Lists every file of the saved model folder in its MANIFEST.json.
fn record_manifest(dir: &Path, parameters: &serde_json::Value) -> Result<(), Error> {
    let provenance = common::provenance::Provenance::new(
        "tune-embeddings",
        env!("CARGO_PKG_VERSION"),
        parameters.clone(),
    );
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| common::Error::io(&d, e))?;
        for entry in entries {
            let path = entry.map_err(|e| common::Error::io(&d, e))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            if path.is_dir() {
                stack.push(path);
            } else if !name.starts_with('.') && name != common::manifest::MANIFEST {
                common::manifest::record(dir, &path, None, &provenance)?;
            }
        }
    }
    Ok(())
}

/// The held-out and training example indices: a permutation seeded by `opts.seed`, whose
/// first rows are held out.
pub fn split(n: usize, opts: &Options) -> (Vec<usize>, Vec<usize>) {
    let eval_n = match opts.eval {
        EvalSplit::Rows(r) => r.min(n / 5),
        EvalSplit::Fraction(f) => ((n as f64) * f).round() as usize,
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(opts.seed));
    let train = order.split_off(eval_n);
    (order, train)
}

fn validate(opts: &Options) -> Result<(), Error> {
    let bad = |m: String| Err(Error::Invalid(m));
    if opts.batch_size < 2 {
        return bad(format!(
            "batch size must be at least 2 (in-batch negatives), got {}",
            opts.batch_size
        ));
    }
    if opts.epochs == 0 {
        return bad("epochs must be at least 1".into());
    }
    if opts.mini_batch_size == Some(0) {
        return bad("mini-batch size must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&opts.warmup_ratio) {
        return bad(format!(
            "warmup ratio must be in [0, 1], got {}",
            opts.warmup_ratio
        ));
    }
    if let EvalSplit::Fraction(f) = opts.eval {
        if !(0.0..0.9).contains(&f) {
            return bad(format!("eval fraction must be in [0, 0.9), got {f}"));
        }
    }
    if let Some(p) = opts.dropout {
        if !(0.0..1.0).contains(&p) {
            return bad(format!("dropout must be in [0, 1), got {p}"));
        }
    }
    Ok(())
}

fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    dropout_seed(seed, u64::MAX, epoch, usize::MAX)
}

/// What must stay the same for a checkpoint to be resumed.
fn fingerprint(opts: &Options, data_sha: &str, base_sha: &str) -> String {
    let mut o = opts.clone();
    o.resume = false;
    o.stop_after_steps = None;
    o.checkpoint_steps = None;
    o.eval_steps = None;
    o.device = String::new();
    let text = serde_json::json!({"options": o, "data": data_sha, "base": base_sha}).to_string();
    common::provenance::sha256_bytes(text.as_bytes())
}

fn model_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

pub fn format_metrics(m: &Metrics) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}
