//! One training run: the trainer, its data, the held-out evaluation, the checkpoint folder
//! and the metrics log, and the loop over epochs and steps that `run` drives.

use std::path::Path;
use std::time::Instant;

use encoder::{ModelCard, Precision, SentenceEncoder, TuningStage};

use crate::checkpoint::{Best, Checkpoints, State};
use crate::data::Examples;
use crate::eval::{Evaluation, Metrics};
use crate::metrics_log::MetricsLog;
use crate::optim::LossScale;
use crate::trainer::{self, learning_rate, tokenize, Tokenized, Trainer};

use crate::{batching, format_metrics, Error, Options, Report};

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

/// One training run's parts: the trainer, its data, the evaluation, the checkpoints and log.
pub(crate) struct Training<'a> {
    pub(crate) opts: &'a Options,
    /// The base model's max_seq_length: what evaluation embeds at and the saved model keeps.
    pub(crate) embed_length: usize,
    pub(crate) trainer: Trainer<'a>,
    pub(crate) train: Tokenized,
    pub(crate) train_texts: Vec<Vec<&'a str>>,
    pub(crate) evaluation: Option<Evaluation>,
    pub(crate) ckpt: Checkpoints,
    pub(crate) log: MetricsLog,
    pub(crate) state: State,
    pub(crate) total_steps: u64,
    pub(crate) warmup: u64,
}

impl<'a> Training<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        opts: &'a Options,
        encoder: SentenceEncoder,
        examples: &'a Examples,
        train_idx: &[usize],
        evaluation: Option<Evaluation>,
        data_sha: &str,
        base_sha: &str,
    ) -> Result<Self, Error> {
        let embed_length = encoder.folder.sbert.max_seq_length;
        let mut trainer = Trainer::new(opts, encoder)?;
        let train = tokenize(&trainer.encoder, examples, train_idx)?;
        let train_texts: Vec<Vec<&str>> =
            train_idx.iter().map(|&i| texts_of(examples, i)).collect();
        let batches_per_epoch = batching::epoch_batches(
            &train_texts,
            opts.batch_size,
            trainer::epoch_seed(opts.seed, 0),
        )
        .len();
        let total_steps = (batches_per_epoch * opts.epochs) as u64;
        let ckpt = Checkpoints::open(opts.checkpoint_dir(), fingerprint(opts, data_sha, base_sha))?;
        let resumed = if opts.resume {
            ckpt.resume(&mut trainer)?
        } else {
            None
        };
        if let Some(s) = &resumed {
            tracing::info!(
                "resuming at step {} (epoch {}, batch {})",
                s.step,
                s.epoch + 1,
                s.batch_in_epoch
            );
        }
        let log = MetricsLog::open(&ckpt.dir, resumed.as_ref().map(|s| s.step))?;
        let state = resumed.unwrap_or_else(|| {
            ckpt.fresh_state((opts.precision == Precision::F16).then(LossScale::default))
        });
        Ok(Training {
            opts,
            embed_length,
            trainer,
            train,
            train_texts,
            evaluation,
            ckpt,
            log,
            state,
            total_steps,
            warmup: (opts.warmup_ratio * total_steps as f64).ceil() as u64,
        })
    }

    /// Evaluates the current weights, logs the metrics, and keeps them as `best/` when they
    /// beat the best so far.
    pub(crate) fn evaluate(&mut self) -> Result<Option<Metrics>, Error> {
        let Some(evaluation) = &self.evaluation else {
            return Ok(None);
        };
        let metrics = evaluation.metrics(&self.trainer.encoder)?;
        let value = evaluation.selected(&metrics)?;
        self.log.eval(self.state.step, self.state.epoch, &metrics)?;
        tracing::info!("step {}: {}", self.state.step, format_metrics(&metrics));
        if self
            .state
            .best
            .as_ref()
            .is_none_or(|b| evaluation.improves(value, b.value))
        {
            self.state.best = Some(Best {
                metric: evaluation.metric.clone(),
                value,
                step: self.state.step,
            });
            self.ckpt.save_best(&self.trainer, &metrics)?;
        }
        Ok(Some(metrics))
    }

    /// Trains until the last epoch ends or `--stop-after-steps`; returns the pairs trained on
    /// and whether it stopped early.
    pub(crate) fn train_epochs(&mut self, report: &mut Report) -> Result<(usize, bool), Error> {
        let opts = self.opts;
        let bar = common::progress::bar(self.total_steps, "steps");
        bar.set_position(self.state.step);
        let start = Instant::now();
        let (mut trained_pairs, mut steps_here) = (0usize, 0u64);
        while self.state.epoch < opts.epochs {
            let seed = trainer::epoch_seed(opts.seed, self.state.epoch);
            let batches = batching::epoch_batches(&self.train_texts, opts.batch_size, seed);
            while self.state.batch_in_epoch < batches.len() {
                if opts.stop_after_steps.is_some_and(|s| steps_here >= s) {
                    bar.finish_and_clear();
                    return Ok((trained_pairs, true));
                }
                let batch = &batches[self.state.batch_in_epoch];
                let lr = learning_rate(opts.lr, self.state.step, self.warmup, self.total_steps);
                let s = &mut self.state;
                let outcome =
                    self.trainer
                        .step(&self.train, batch, s.step, lr, &mut s.loss_scale)?;
                s.step += 1;
                s.batch_in_epoch += 1;
                steps_here += 1;
                trained_pairs += batch.len();
                report.last_loss = Some(outcome.loss);
                let rate = trained_pairs as f64 / start.elapsed().as_secs_f64().max(1e-9);
                let scale = s.loss_scale.map(|l| l.scale);
                self.log.train(s.step, s.epoch, lr, &outcome, scale, rate)?;
                bar.set_position(s.step);
                bar.set_message(format!(
                    "epoch {}/{} loss {:.4} {rate:.1} pairs/s",
                    s.epoch + 1,
                    opts.epochs,
                    outcome.loss
                ));
                let (step, epoch_done) = (s.step, s.batch_in_epoch == batches.len());
                if epoch_done {
                    s.epoch += 1;
                    s.batch_in_epoch = 0;
                    self.evaluate()?;
                    self.ckpt.save_last(&self.state, &self.trainer)?;
                    break;
                }
                if opts.eval_steps.is_some_and(|e| step.is_multiple_of(e)) {
                    self.evaluate()?;
                }
                if opts
                    .checkpoint_steps
                    .is_some_and(|c| step.is_multiple_of(c))
                {
                    self.ckpt.save_last(&self.state, &self.trainer)?;
                }
            }
        }
        bar.finish_and_clear();
        Ok((trained_pairs, false))
    }

    /// Writes the trainer's weights as a sentence-transformers folder at `--out`, embedding
    /// at the base model's max_seq_length whatever the training length, with the model card
    /// (base vs tuned held-out figures), training_args.json, the metrics log and a
    /// MANIFEST.json.
    pub(crate) fn save_model(
        &mut self,
        report: &Report,
        data: String,
        data_sha: &str,
        base_sha: &str,
    ) -> Result<(), Error> {
        let opts = self.opts;
        let trained_at = self.trainer.encoder.tokenizer.max_seq_length();
        if trained_at < self.embed_length {
            tracing::warn!(
                "trained at {trained_at} tokens per text; the saved model embeds at the base model's {} (as it was evaluated)",
                self.embed_length
            );
        }
        self.trainer.encoder.set_max_seq_length(self.embed_length)?;
        let base = report.before.clone().or_else(|| self.log.first_eval());
        let held_out = serde_json::json!({
            "base": base,
            "tuned": report.best,
            "selected_by": self.evaluation.as_ref().map(|e| e.metric.clone()),
            "split": report.split,
            "held_out_documents": report.held_out_documents,
            "held_out_chunks": report.held_out_chunks,
            "embedded_at_max_seq_length": self.embed_length,
        });
        // A second stage (CoSENT from the first stage's output) keeps the original base model
        // and the first stage in its card.
        let stage = TuningStage {
            started_from: opts.base_model.display().to_string(),
            data,
            loss: opts.loss.describe(),
            hyperparameters: serde_json::to_value(opts).expect("options serialize"),
            metrics: held_out.clone(),
        };
        let card = ModelCard::tuned_from(&opts.base_model, &model_name(&opts.base_model), stage)?;
        self.trainer.encoder.save(&opts.out, &card)?;
        let args = serde_json::json!({ "options": opts, "base_model_sha256": base_sha, "data_sha256": data_sha, "steps": self.state.step, "total_steps": self.total_steps, "warmup_steps": self.warmup, "trained_at_max_seq_length": trained_at, "best": self.state.best, "held_out": held_out });
        common::atomic::write_atomic(
            &opts.out.join("training_args.json"),
            &serde_json::to_vec_pretty(&args).expect("json"),
        )?;
        self.log.copy_into(&opts.out)?;
        record_manifest(&opts.out, &args)
    }
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
