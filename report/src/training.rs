//! The training and time-tracking sections, from what tune-embeddings leaves in `model/`:
//! `metrics.jsonl` (one line per step `{"kind":"train","step","loss",…}` and per evaluation
//! `{"kind":"eval","step","metrics":{…}}`), `training_args.json` (options, steps, the best
//! evaluation, the held-out documents and chunks) and the model card `README.md` (held-out pair
//! count).
//!
//! The reader is tolerant: metrics are whatever numeric leaves an evaluation holds (nested
//! objects are flattened to `a.b.c`), so measures added later show up without a change here;
//! missing fields leave cells empty instead of failing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::html::{self, Content, Figure, Section};
use crate::inputs::{RunInputs, MODEL};
use crate::{figures, Error, Result};

/// At most this many points of the loss curve are drawn (means over equal step ranges).
const MAX_LOSS_POINTS: usize = 1500;

/// One evaluation: step and flattened metrics.
#[derive(Debug, Clone)]
pub struct Eval {
    pub step: u64,
    pub metrics: BTreeMap<String, f64>,
}

/// What the model folder says about training.
#[derive(Debug, Clone, Default)]
pub struct TrainingLog {
    /// (step, loss) of every logged step.
    pub losses: Vec<(u64, f64)>,
    pub evals: Vec<Eval>,
    /// The evaluation whose weights were saved: (metric, step).
    pub best: Option<(String, u64)>,
    /// Options and counts from training_args.json, flattened.
    pub settings: BTreeMap<String, String>,
    /// Held-out pairs, from the model card (0 with the document split: no pair comes from a
    /// held-out document).
    pub eval_examples: Option<u64>,
    /// Held-out documents and their chunks, on which the corpus measures (`successive_*`,
    /// `knn_*`) are computed: `held_out` in training_args.json.
    pub held_out_corpus: Option<(u64, u64)>,
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, f64>) {
    match v {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.insert(prefix.to_string(), x);
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        _ => {}
    }
}

fn flatten_text(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_text(&key, v, out);
            }
        }
        Value::Null => {}
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Reads `model/metrics.jsonl`, `training_args.json` and the model card.
pub fn read_log(model: &Path) -> Result<TrainingLog> {
    let log_path = model.join("metrics.jsonl");
    let text = std::fs::read_to_string(&log_path).map_err(|e| common::Error::io(&log_path, e))?;
    let mut log = TrainingLog::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| Error::input(&log_path, format!("line {}: not JSON: {e}", i + 1)))?;
        let step = v.get("step").and_then(Value::as_u64).unwrap_or(0);
        match v.get("kind").and_then(Value::as_str) {
            Some("train") => {
                if let Some(loss) = v.get("loss").and_then(Value::as_f64) {
                    log.losses.push((step, loss));
                }
            }
            Some("eval") => {
                let mut metrics = BTreeMap::new();
                flatten("", v.get("metrics").unwrap_or(&Value::Null), &mut metrics);
                log.evals.push(Eval { step, metrics });
            }
            _ => {}
        }
    }
    let args_path = model.join("training_args.json");
    if let Ok(bytes) = std::fs::read(&args_path) {
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::input(&args_path, format!("not JSON: {e}")))?;
        if let Some(b) = v.get("best").filter(|b| !b.is_null()) {
            let metric = b.get("metric").and_then(Value::as_str).unwrap_or("");
            if let Some(step) = b.get("step").and_then(Value::as_u64) {
                log.best = Some((metric.to_string(), step));
            }
        }
        flatten_text(
            "",
            v.get("options").unwrap_or(&Value::Null),
            &mut log.settings,
        );
        let held_out = |k: &str| v.get("held_out")?.get(k)?.as_u64();
        log.held_out_corpus = held_out("held_out_documents").zip(held_out("held_out_chunks"));
        for k in ["steps", "total_steps", "warmup_steps"] {
            if let Some(x) = v.get(k).filter(|x| !x.is_null()) {
                log.settings.insert(k.to_string(), x.to_string());
            }
        }
    }
    log.eval_examples = std::fs::read_to_string(model.join("README.md"))
        .ok()
        .and_then(|card| held_out_count(&card));
    Ok(log)
}

/// What the evaluations ran on: "308 held-out pairs", "the 687 chunks of 50 held-out
/// documents", or both.
fn held_out_text(log: &TrainingLog) -> String {
    let pairs = log
        .eval_examples
        .filter(|&n| n > 0)
        .map(|n| format!("{n} held-out pairs"));
    let corpus = log
        .held_out_corpus
        .map(|(docs, chunks)| format!("the {chunks} chunks of {docs} held-out documents"));
    match (pairs, corpus) {
        (Some(p), Some(c)) => format!("{p} and {c}"),
        (Some(x), None) | (None, Some(x)) => x,
        (None, None) => match log.eval_examples {
            Some(0) => "no held-out examples".into(),
            _ => "an unknown number of held-out examples".into(),
        },
    }
}

/// "… (1234 training, 308 held-out examples; …" in the model card → 308.
fn held_out_count(card: &str) -> Option<u64> {
    let end = card.find(" held-out examples")?;
    let start = card[..end].rfind(|c: char| !c.is_ascii_digit())? + 1;
    card[start..end].parse().ok()
}

impl TrainingLog {
    /// The evaluation before any step (the base model) and the saved one (the tuned model).
    pub fn base_and_tuned(&self) -> Option<(&Eval, &Eval)> {
        let base = self.evals.iter().find(|e| e.step == 0)?;
        let tuned = match &self.best {
            Some((_, step)) => self.evals.iter().rev().find(|e| e.step == *step)?,
            None => self.evals.last()?,
        };
        Some((base, tuned))
    }

    /// Standard error of a proportion-valued metric over the examples it is a mean of,
    /// `sqrt(p (1 − p) / n)`: accuracy and recall@k over the held-out pairs; the corpus
    /// measure `successive_recall@k` over its queries, every held-out chunk that has a next
    /// chunk (chunks − documents). None for other metrics or an unknown n.
    pub fn std_error(&self, metric: &str, value: f64) -> Option<f64> {
        let last = metric.rsplit('.').next().unwrap_or(metric);
        let (n, proportion) = match last.strip_prefix("successive_") {
            Some(m) => {
                let (docs, chunks) = self.held_out_corpus?;
                (chunks.saturating_sub(docs) as f64, m.starts_with("recall@"))
            }
            None => (
                self.eval_examples? as f64,
                last == "accuracy" || last.starts_with("recall@"),
            ),
        };
        (proportion && n > 0.0 && (0.0..=1.0).contains(&value))
            .then(|| (value * (1.0 - value) / n).sqrt())
    }
}

/// Means of `points` over at most `max` equal runs, so the page stays small for long runs.
fn thin(points: &[(u64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max {
        return points.iter().map(|&(s, l)| (s as f64, l)).collect();
    }
    let per = points.len().div_ceil(max);
    points
        .chunks(per)
        .map(|c| {
            let n = c.len() as f64;
            (
                c.iter().map(|p| p.0 as f64).sum::<f64>() / n,
                c.iter().map(|p| p.1).sum::<f64>() / n,
            )
        })
        .collect()
}

fn model_missing() -> String {
    format!("no {MODEL}/metrics.jsonl in the run folder (tune-embeddings did not run)")
}

pub fn section(inputs: &RunInputs) -> Result<Section> {
    const ID: &str = "training";
    const TITLE: &str = "Training";
    let Some(model) = &inputs.model else {
        return Ok(Section::missing(ID, TITLE, model_missing()));
    };
    let log = read_log(model)?;
    let mut h = String::new();
    let mut figures = Vec::new();
    let best_step = log.best.as_ref().map(|b| b.1);
    let selected = log.best.as_ref().map(|b| b.0.clone());
    let _ = writeln!(
        h,
        "<p><span class=\"steps\">{}</span> training steps logged, <span class=\"evaluations\">{}</span> \
         evaluations on {}{}.</p>",
        log.losses.len(),
        log.evals.len(),
        held_out_text(&log),
        match (&selected, best_step) {
            (Some(m), Some(s)) => format!("; the saved model is the evaluation at step {s} (best {m})"),
            _ => String::new(),
        }
    );
    if !log.losses.is_empty() {
        let marker = best_step.map(|s| (s as f64, "saved checkpoint"));
        figures.push(Figure {
            name: "training-loss".into(),
            svg: figures::lines(
                "training-loss",
                "Training loss per step",
                "optimizer step",
                "loss",
                &[("training loss", thin(&log.losses, MAX_LOSS_POINTS))],
                marker,
            )?,
            caption: if log.losses.len() > MAX_LOSS_POINTS {
                format!(
                    "Loss per step (means over runs of steps, {} points drawn of {}).",
                    MAX_LOSS_POINTS,
                    log.losses.len()
                )
            } else {
                "Loss per step; the dashed line marks the saved checkpoint.".into()
            },
        });
        h.push_str("{fig:training-loss}");
    }
    if let Some(metric) = &selected {
        let pts: Vec<(f64, f64)> = log
            .evals
            .iter()
            .filter_map(|e| e.metrics.get(metric).map(|&v| (e.step as f64, v)))
            .collect();
        if !pts.is_empty() {
            figures.push(Figure {
                name: "training-eval".into(),
                svg: figures::lines(
                    "training-eval",
                    &format!("Held-out {metric} per evaluation"),
                    "optimizer step",
                    metric,
                    &[(metric.as_str(), pts)],
                    best_step.map(|s| (s as f64, "saved checkpoint")),
                )?,
                caption: format!(
                    "Held-out {metric} (the metric that chose the saved checkpoint) at each \
                     evaluation; step 0 is the base model."
                ),
            });
            h.push_str("{fig:training-eval}");
        }
    }
    if let Some((base, tuned)) = log.base_and_tuned() {
        h.push_str("<h3>Base model vs tuned model (held-out)</h3>\n");
        h.push_str(&comparison_table(
            &log,
            base,
            tuned,
            |_| true,
            "training-comparison",
        ));
    }
    if !log.evals.is_empty() {
        let mut keys: Vec<&String> = log.evals.iter().flat_map(|e| e.metrics.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut header = vec!["step"];
        header.extend(keys.iter().map(|k| k.as_str()));
        let rows: Vec<Vec<String>> = log
            .evals
            .iter()
            .map(|e| {
                let mut row = vec![e.step.to_string()];
                row.extend(
                    keys.iter()
                        .map(|k| html::num(e.metrics.get(*k).copied(), 4)),
                );
                row
            })
            .collect();
        let marked: Vec<usize> = log
            .evals
            .iter()
            .enumerate()
            .filter(|(_, e)| Some(e.step) == best_step)
            .map(|(i, _)| i)
            .collect();
        h.push_str(
            "<h3>Every evaluation</h3>\n<p>The saved checkpoint's row is marked \u{2605}.</p>\n",
        );
        h.push_str(&html::table("training-evals", &header, &rows, &marked));
    }
    if !log.settings.is_empty() {
        let rows: Vec<Vec<String>> = log
            .settings
            .iter()
            .map(|(k, v)| vec![k.clone(), v.clone()])
            .collect();
        h.push_str(&html::data_table(
            "Settings (training_args.json)",
            "training-settings",
            &["setting", "value"],
            &rows,
        ));
    }
    Ok(Section {
        id: ID,
        title: TITLE,
        content: Content::Shown {
            html: h,
            figures,
            maps: Vec::new(),
        },
    })
}

/// metric | base | tuned | change | s.e., for the metrics `keep` accepts.
fn comparison_table(
    log: &TrainingLog,
    base: &Eval,
    tuned: &Eval,
    keep: impl Fn(&str) -> bool,
    class: &str,
) -> String {
    let mut keys: Vec<&String> = base.metrics.keys().chain(tuned.metrics.keys()).collect();
    keys.sort();
    keys.dedup();
    let rows: Vec<Vec<String>> = keys
        .into_iter()
        .filter(|k| keep(k.as_str()))
        .map(|k| {
            let (b, t) = (base.metrics.get(k).copied(), tuned.metrics.get(k).copied());
            let se = |v: Option<f64>| v.and_then(|v| log.std_error(k, v));
            let se_text = match (se(b), se(t)) {
                (Some(x), Some(y)) => format!("\u{b1}{x:.4} / \u{b1}{y:.4}"),
                _ => "\u{2013}".into(),
            };
            vec![
                k.clone(),
                html::num(b, 4),
                html::num(t, 4),
                html::num(b.zip(t).map(|(b, t)| t - b), 4),
                se_text,
            ]
        })
        .collect();
    html::table(
        class,
        &[
            "measure",
            &format!("base (step {})", base.step),
            &format!("tuned (step {})", tuned.step),
            "change",
            "std. error base / tuned",
        ],
        &rows,
        &[],
    )
}

/// Whether a flattened metric name is a time measure (year error, same-decade share, …).
fn is_time_measure(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("year") || k.contains("decade")
}

/// The time-tracking section: the held-out time measures of the base and the tuned model, as
/// tune-embeddings logs them (any metric whose name mentions a year or decade).
pub fn time_section(inputs: &RunInputs) -> Result<Section> {
    const ID: &str = "time";
    const TITLE: &str = "Time tracking";
    let Some(model) = &inputs.model else {
        return Ok(Section::missing(ID, TITLE, model_missing()));
    };
    let log = read_log(model)?;
    let Some((base, tuned)) = log.base_and_tuned() else {
        return Ok(Section::missing(
            ID,
            TITLE,
            "model/metrics.jsonl has no evaluation of the base model (step 0)",
        ));
    };
    if !base
        .metrics
        .keys()
        .chain(tuned.metrics.keys())
        .any(|k| is_time_measure(k))
    {
        return Ok(Section::missing(
            ID,
            TITLE,
            "the held-out evaluations in model/metrics.jsonl carry no time measures (kNN year \
             error, same-decade share)",
        ));
    }
    let mut h = String::from(
        "<p>Held-out time measures of the base model and the tuned (saved) model: how far the \
         years of a chunk's nearest neighbours are from its own.</p>\n",
    );
    h.push_str(&comparison_table(
        &log,
        base,
        tuned,
        is_time_measure,
        "time-measures",
    ));
    Ok(Section {
        id: ID,
        title: TITLE,
        content: Content::Shown {
            html: h,
            figures: Vec::new(),
            maps: Vec::new(),
        },
    })
}

/// The model folder's base model, when training_args.json names one that exists (relative
/// paths are taken from the run folder, where the pipeline runs tune-embeddings).
pub fn base_model_of(run_dir: &Path, model: &Path) -> Option<PathBuf> {
    let bytes = std::fs::read(model.join("training_args.json")).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let p = PathBuf::from(v.get("options")?.get("base_model")?.as_str()?);
    let p = if p.is_absolute() { p } else { run_dir.join(p) };
    p.join("modules.json").is_file().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_count_from_the_model_card() {
        let card = "- **Training data:** runs/x/pairs.parquet (2741 training, 685 held-out examples; sha256 ab)";
        assert_eq!(held_out_count(card), Some(685));
        assert_eq!(held_out_count("no count here"), None);
    }

    #[test]
    fn document_split_counts_chunks_and_documents() {
        // The sample's main job: no held-out pair, 687 chunks of 50 held-out documents.
        let log = TrainingLog {
            eval_examples: Some(0),
            held_out_corpus: Some((50, 687)),
            ..Default::default()
        };
        assert_eq!(
            held_out_text(&log),
            "the 687 chunks of 50 held-out documents"
        );
        // successive_recall@1 = 0.1413 over 637 queries: sqrt(0.1413 · 0.8587 / 637) = 0.01380.
        let se = log.std_error("successive_recall@1", 0.1413).unwrap();
        assert!((se - 0.013800).abs() < 1e-5, "{se}");
        assert_eq!(log.std_error("successive_mrr@10", 0.2), None);
        assert_eq!(log.std_error("recall@1", 0.2), None, "no held-out pair");
        let pairs = TrainingLog {
            eval_examples: Some(308),
            ..Default::default()
        };
        assert_eq!(held_out_text(&pairs), "308 held-out pairs");
    }

    #[test]
    fn nested_metrics_are_flattened() {
        let v: Value = serde_json::from_str(
            r#"{"mrr@10": 0.5, "corpus": {"knn": {"year_error": 12}}, "name": "x", "n": null}"#,
        )
        .unwrap();
        let mut out = BTreeMap::new();
        flatten("", &v, &mut out);
        assert_eq!(
            out,
            BTreeMap::from([
                ("corpus.knn.year_error".to_string(), 12.0),
                ("mrr@10".to_string(), 0.5)
            ])
        );
        assert!(is_time_measure("corpus.knn.year_error"));
        assert!(is_time_measure("same_decade_share"));
        assert!(!is_time_measure("mrr@10"));
    }

    #[test]
    fn long_loss_curves_are_thinned_to_means() {
        let pts: Vec<(u64, f64)> = (1..=10).map(|s| (s, s as f64)).collect();
        assert_eq!(
            thin(&pts, 5),
            [(1.5, 1.5), (3.5, 3.5), (5.5, 5.5), (7.5, 7.5), (9.5, 9.5)]
        );
        assert_eq!(thin(&pts, 20).len(), 10);
    }
}
