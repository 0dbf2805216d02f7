//! tune-embeddings on the real base model: batching, GradCache, exact resume, the sample
//! corpus, and bad input.

mod support;

use common::testing::{base_model, workspace_root as root};
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use common::provenance::Provenance;
use common::schema::{Category, Side};
use common::tables::{write_pairs, PairRow};
use encoder::{Precision, SentenceEncoder};
use tune_embeddings::data::{self, Source};
use tune_embeddings::{batching, run, split, tokenize, Loss, Options, SplitBy, Trainer};

fn options(train: Source, out: PathBuf) -> Options {
    Options {
        // These tests predate the document split and keep its assertions: the pair split.
        split: SplitBy::Pair,
        ..support::options(train, out)
    }
}

fn pair(id: usize, anchor: Option<&str>, positive: Option<&str>) -> PairRow {
    PairRow {
        pair_id: format!("p{id}"),
        doc_id: format!("d{id}"),
        year: 1900,
        anchor: anchor.map(str::to_string),
        positive: positive.map(str::to_string),
        negative: None,
        category: Category::Successive,
        paraphrase_side: None,
        provenance: Default::default(),
    }
}

/// Pairs from the sample corpus by select-pairs (no paraphrase), the first `limit` of them.
fn sample_pairs(dir: &Path, limit: usize) -> PathBuf {
    let all = dir.join("all-pairs.parquet");
    let opts = select_pairs::Options {
        corpus: common::corpus::Corpus::Chunks(root().join("data/sample/chunks.parquet")),
        out: all.clone(),
        seed: 1,
        from_year: None,
        to_year: None,
        per_year: None,
        cap_rank: 25,
        params: select_pairs::Params::no_paraphrase(),
        held_out: None,
    };
    select_pairs::run(&opts).unwrap();
    let rows = common::tables::PairsReader::read_all(&all).unwrap();
    let path = dir.join("pairs.parquet");
    let n = limit.min(rows.len());
    write_pairs(
        &path,
        &rows[..n],
        &Provenance::new("test", "0", serde_json::Value::Null),
    )
    .unwrap();
    path
}

fn jsonl(dir: &Path, lines: &[String]) -> PathBuf {
    let path = dir.join("train.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

#[test]
fn batches_hold_no_duplicate_text_and_cover_every_example_once() {
    let texts: Vec<Vec<&str>> = (0..200)
        .map(|i| match i % 10 {
            0 => vec!["common anchor", "p"],
            1 => vec!["a", "common positive"],
            _ => vec!["x", "y"],
        })
        .enumerate()
        .map(|(i, mut t)| {
            if t[0] == "x" {
                t = vec![
                    Box::leak(format!("anchor {i}").into_boxed_str()),
                    Box::leak(format!("positive {i}").into_boxed_str()),
                ];
            }
            t
        })
        .collect();
    let batches = batching::epoch_batches(&texts, 16, 7);
    let mut seen = vec![0; texts.len()];
    for b in &batches {
        assert!(b.len() <= 16);
        let mut in_batch = std::collections::HashSet::new();
        for &i in b {
            seen[i] += 1;
            for t in &texts[i] {
                assert!(in_batch.insert(*t), "text {t:?} twice in one batch");
            }
        }
    }
    assert!(
        seen.iter().all(|&c| c == 1),
        "every example exactly once per epoch"
    );
    assert_ne!(
        batches,
        batching::epoch_batches(&texts, 16, 8),
        "the order depends on the seed"
    );
}

#[test]
fn gradcache_gives_the_same_loss_and_gradients() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..8)
        .map(|i| serde_json::json!({"query": format!("question number {i} about taxes"), "positive": format!("answer {i}: revenue rose"), "negative": format!("unrelated text {i}")}).to_string())
        .collect();
    let path = jsonl(dir.path(), &lines);
    let examples = data::load(&Source::Jsonl(path.clone(), Default::default())).unwrap();
    for loss in [
        Loss::Mnrl { scale: 20.0 },
        Loss::MnrlSymmetric { scale: 20.0 },
    ] {
        let mut opts = options(
            Source::Jsonl(path.clone(), Default::default()),
            dir.path().join("out"),
        );
        opts.loss = loss;
        opts.dropout = Some(0.0); // masks differ between one pass and mini-batches; the math must not
        let encoder = SentenceEncoder::load(&opts.base_model, &Device::Cpu).unwrap();
        let trainer = Trainer::new(&opts, encoder).unwrap();
        let data = tokenize(&trainer.encoder, &examples, &(0..8).collect::<Vec<_>>()).unwrap();
        assert_eq!(data.columns.len(), 3, "hard negatives are used");
        let batch: Vec<usize> = (0..8).collect();
        let (plain_loss, plain) = trainer.batch_grads(&data, &batch, 0, 1.0).unwrap();
        let (cached_loss, cached) = trainer
            .batch_grads_cached(&data, &batch, 0, 3, 1.0)
            .unwrap();
        assert!(
            (plain_loss - cached_loss).abs() < 1e-5,
            "{loss:?}: loss {plain_loss} vs {cached_loss}"
        );
        // Per tensor, relative to its largest gradient, with an absolute floor: the attention
        // key bias has a true gradient of zero (a shift shared by all keys leaves softmax
        // unchanged), so its ~1e-9 values are rounding noise on either path.
        let mut worst = 0f32;
        for ((name, _), (p, c)) in trainer.vars.iter().zip(plain.iter().zip(&cached)) {
            let (p, c) = (p.as_ref().unwrap(), c.as_ref().unwrap());
            let scale = max_abs(p).max(1e-4);
            let diff = max_abs(&(p - c).unwrap());
            worst = worst.max(diff / scale);
            assert!(
                diff / scale < 1e-4,
                "{loss:?}: {name}: gradients differ by {diff} (max {scale})"
            );
        }
        eprintln!("{loss:?}: worst relative gradient difference {worst:e}");
    }
}

/// Largest absolute value of a tensor.
fn max_abs(t: &candle_core::Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn train_losses(ckpt: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(ckpt.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn interrupted_and_resumed_run_equals_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = sample_pairs(dir.path(), 48);
    let mut whole = options(Source::Pairs(pairs.clone()), dir.path().join("whole"));
    whole.epochs = 2;
    let full = run(&whole).unwrap();
    assert!(full.finished && full.steps >= 8, "{full:?}");

    let mut parts = whole.clone();
    parts.out = dir.path().join("parts");
    parts.stop_after_steps = Some(3);
    // --resume without a checkpoint starts afresh (the slurm stage always passes it).
    parts.resume = true;
    let r = run(&parts).unwrap();
    assert!(!r.finished && r.steps == 3);
    assert!(!parts.out.exists(), "no model before training finishes");
    parts.stop_after_steps = Some(4); // crosses the epoch boundary
    assert_eq!(run(&parts).unwrap().steps, 7);
    parts.stop_after_steps = None;
    let r = run(&parts).unwrap();
    assert!(r.finished && r.steps == full.steps);

    let (a, b) = (
        train_losses(&whole.checkpoint_dir()),
        train_losses(&parts.checkpoint_dir()),
    );
    assert_eq!(a.len(), b.len());
    for ((sa, la), (sb, lb)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert!((la - lb).abs() < 1e-5, "step {sa}: loss {la} vs {lb}");
    }
    let load = |p: &Path| {
        candle_core::safetensors::load(p.join("model.safetensors"), &Device::Cpu).unwrap()
    };
    let (wa, wb) = (load(&whole.out), load(&parts.out));
    for (name, ta) in &wa {
        if ta.dtype() != candle_core::DType::F32 {
            continue;
        }
        let diff = max_abs(&(ta - &wb[name]).unwrap());
        assert!(diff < 1e-5, "{name} differs by {diff}");
    }
    // A checkpoint of another run is refused.
    let mut other = parts.clone();
    other.lr = 1e-4;
    let e = run(&other).unwrap_err().to_string();
    assert!(e.contains("other data, model or options"), "{e}");
}

#[test]
fn mixed_precision_trains_f32_weights_along_the_f32_loss_curve() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = sample_pairs(dir.path(), 40);
    let run_with = |precision: Precision| {
        let mut opts = options(
            Source::Pairs(pairs.clone()),
            dir.path().join(format!("{precision}")),
        );
        opts.precision = precision;
        let r = run(&opts).unwrap();
        assert!(r.finished && r.steps == 4, "{precision}: {r:?}");
        let losses = train_losses(&opts.checkpoint_dir());
        (opts, losses)
    };
    let (_, f32_losses) = run_with(Precision::F32);
    let base = candle_core::safetensors::load(base_model().join("model.safetensors"), &Device::Cpu)
        .unwrap();
    for precision in [Precision::Bf16, Precision::F16] {
        let (opts, losses) = run_with(precision);
        eprintln!("{precision}: {losses:?} vs f32 {f32_losses:?}");
        // The first loss comes before any update: only rounding separates it from f32's.
        let (first, first32) = (losses[0].1, f32_losses[0].1);
        assert!(
            (first - first32).abs() < 0.02 * first32,
            "{precision}: first loss {first} vs f32 {first32}"
        );
        // Same dropout masks on every path, so the whole curve follows f32's.
        for ((_, l), (_, l32)) in losses.iter().zip(&f32_losses) {
            assert!((l - l32).abs() < 0.05 * l32, "{precision}: {losses:?}");
        }
        // The last weights (the saved model may be the untrained one, if it evaluated best).
        let saved = candle_core::safetensors::load(
            opts.checkpoint_dir().join("last/weights.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let w = "encoder.layer.0.attention.self.query.weight";
        assert_eq!(saved[w].dtype(), candle_core::DType::F32, "master weights");
        assert!(
            max_abs(&(&saved[w] - &base[w]).unwrap()) > 0.0,
            "{precision}: not trained"
        );
        let state: serde_json::Value = serde_json::from_slice(
            &std::fs::read(opts.checkpoint_dir().join("last/state.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            state["loss_scale"].is_object(),
            precision == Precision::F16,
            "f16 alone scales the loss: {state}"
        );
    }
}

#[test]
fn a_run_that_beats_no_evaluation_says_it_saved_the_base_model() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = sample_pairs(dir.path(), 48);
    let mut opts = options(Source::Pairs(pairs), dir.path().join("tuned"));
    opts.max_seq_length = Some(32);
    // A step too small to change any ranking: no evaluation is strictly better than step 0.
    opts.lr = 1e-15;
    let report = run(&opts).unwrap();
    assert_eq!(report.before, report.best, "identical evaluations");
    assert_eq!(report.saved_step, Some(0));
    let saved = std::fs::read(opts.out.join("model.safetensors")).unwrap();
    let base = std::fs::read(base_model().join("model.safetensors")).unwrap();
    assert!(
        saved == base,
        "the saved weights are the base model's, byte for byte"
    );
}

#[test]
fn short_run_on_the_sample_corpus_improves_mrr_and_saves_a_loadable_model() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = sample_pairs(dir.path(), usize::MAX);
    let mut opts = options(Source::Pairs(pairs.clone()), dir.path().join("tuned"));
    opts.batch_size = 32;
    opts.max_seq_length = Some(128);
    opts.lr = 5e-5;
    let report = run(&opts).unwrap();
    let (before, best) = (report.before.clone().unwrap(), report.best.clone().unwrap());
    eprintln!(
        "held-out MRR@10: base {:.4} → tuned {:.4}",
        before["mrr@10"], best["mrr@10"]
    );
    assert!(
        best["mrr@10"] > before["mrr@10"],
        "before {before:?}, after {best:?}"
    );
    assert!(report.saved_step.unwrap() > 0, "a trained step was saved");

    // The saved folder: layout, tensor names, and embeddings that reproduce the reported metrics.
    for f in [
        "modules.json",
        "config_sentence_transformers.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "README.md",
        "training_args.json",
        "metrics.jsonl",
    ] {
        assert!(opts.out.join(f).exists(), "missing {f}");
    }
    assert!(opts.out.join("2_Normalize").is_dir());
    let sbert: serde_json::Value =
        serde_json::from_slice(&std::fs::read(opts.out.join("sentence_bert_config.json")).unwrap())
            .unwrap();
    // Trained at 128 tokens, the model still embeds at the base model's 256.
    assert_eq!(sbert["max_seq_length"], 256);
    let tuned = SentenceEncoder::load(&opts.out, &Device::Cpu).unwrap();
    let base = SentenceEncoder::load(&base_model(), &Device::Cpu).unwrap();
    assert_eq!(tuned.weights().file_names(), base.weights().file_names());
    let examples = data::load(&opts.train).unwrap();
    let doc_ids = data::doc_ids(&opts.train).unwrap();
    let eval_idx = split(&opts, examples.len(), doc_ids.as_deref())
        .unwrap()
        .eval_idx;
    let data = tokenize(&tuned, &examples, &eval_idx).unwrap();
    let dim = tuned.dim();
    let m = tune_embeddings::eval::pair_metrics(
        &tuned.embed_ids(&data.columns[0], 64).unwrap(),
        &tuned.embed_ids(&data.columns[1], 64).unwrap(),
        dim,
    );
    for k in ["mrr@10", "accuracy", "recall@1"] {
        assert!(
            (m[k] - best[k]).abs() < 1e-9,
            "{k}: reloaded {} vs reported {}",
            m[k],
            best[k]
        );
    }
    assert!(common::manifest::verify(&opts.out).unwrap().is_empty());
    assert!(common::manifest::Manifest::load(&opts.out)
        .unwrap()
        .files
        .contains_key("model.safetensors"));
    let card = std::fs::read_to_string(opts.out.join("README.md")).unwrap();
    assert!(card.contains("MultipleNegativesRankingLoss") && card.contains("mrr@10"));
}

#[test]
fn cosent_trains_on_scored_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("sentence1,sentence2,score\n");
    for i in 0..40 {
        let score = (i % 5) as f32 / 4.0;
        csv += &format!(
            "\"The tariff, part {i}\",duties on imports {},{score}\n",
            i * (i % 5)
        );
    }
    let path = dir.path().join("scored.csv");
    std::fs::write(&path, csv).unwrap();
    let mut opts = options(Source::Scored(path), dir.path().join("out"));
    opts.loss = Loss::CoSent { scale: 20.0 };
    let r = run(&opts).unwrap();
    assert!(
        r.finished && r.best.as_ref().unwrap().contains_key("spearman"),
        "{r:?}"
    );
}

#[test]
fn bad_input_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prov = Provenance::new("test", "0", serde_json::Value::Null);
    let err = |opts: &Options| {
        let e = run(opts).unwrap_err();
        assert!(e.is_bad_input(), "{e}");
        assert!(!opts.out.exists() && !opts.checkpoint_dir().join("last").exists());
        e.to_string()
    };

    let mut rows: Vec<PairRow> = (0..20)
        .map(|i| pair(i, Some("a text"), Some(&format!("b {i}"))))
        .collect();
    rows[3].positive = None;
    rows[3].category = Category::SingleSynthetic;
    rows[3].paraphrase_side = Some(Side::Positive);
    rows[9].anchor = None;
    write_pairs(&d.join("missing.parquet"), &rows, &prov).unwrap();
    let e = err(&options(
        Source::Pairs(d.join("missing.parquet")),
        d.join("o1"),
    ));
    assert!(
        e.contains("2 of 20 pairs still lack their paraphrase") && e.contains("row 3"),
        "{e}"
    );

    let path = jsonl(
        d,
        &[
            r#"{"query": "q", "positive": "p"}"#.into(),
            r#"{"query": "q2", "positive": "  "}"#.into(),
        ],
    );
    let e = err(&options(
        Source::Jsonl(path.clone(), Default::default()),
        d.join("o2"),
    ));
    assert!(
        e.contains("train.jsonl:2") && e.contains("`positive` is empty"),
        "{e}"
    );

    let ok: Vec<PairRow> = (0..10)
        .map(|i| pair(i, Some(&format!("a {i}")), Some(&format!("b {i}"))))
        .collect();
    write_pairs(&d.join("small.parquet"), &ok, &prov).unwrap();
    let mut opts = options(Source::Pairs(d.join("small.parquet")), d.join("o3"));
    opts.batch_size = 16;
    let e = err(&opts);
    assert!(
        e.contains("batch size 16 is larger than the 8 training examples"),
        "{e}"
    );

    let fake = d.join("mpnet");
    std::fs::create_dir_all(&fake).unwrap();
    for f in [
        "modules.json",
        "tokenizer.json",
        "model.safetensors",
        "sentence_bert_config.json",
    ] {
        std::fs::copy(base_model().join(f), fake.join(f)).unwrap();
    }
    std::fs::create_dir_all(fake.join("1_Pooling")).unwrap();
    std::fs::copy(
        base_model().join("1_Pooling/config.json"),
        fake.join("1_Pooling/config.json"),
    )
    .unwrap();
    let config = std::fs::read_to_string(base_model().join("config.json"))
        .unwrap()
        .replace("\"bert\"", "\"mpnet\"");
    std::fs::write(fake.join("config.json"), config).unwrap();
    let mut opts = options(Source::Pairs(d.join("small.parquet")), d.join("o4"));
    opts.batch_size = 4;
    opts.base_model = fake;
    let e = err(&opts);
    assert!(e.contains("model_type \"mpnet\" is not supported"), "{e}");

    let mut opts = options(Source::Pairs(d.join("small.parquet")), d.join("o5"));
    opts.loss = Loss::CoSent { scale: 20.0 };
    assert!(err(&opts).contains("pick the loss that fits the data"));
}

#[test]
fn cli_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_tune-embeddings");
    let out = Command::new(bin)
        .args(["--base-model"])
        .arg(base_model())
        .arg("--out")
        .arg(dir.path().join("m"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pairs, --jsonl or --scored"));
    let path = jsonl(dir.path(), &[r#"{"query": "q"}"#.into()]);
    let out = Command::new(bin)
        .args(["--base-model"])
        .arg(base_model())
        .arg("--jsonl")
        .arg(&path)
        .arg("--out")
        .arg(dir.path().join("m"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("train.jsonl:1: no `positive`, `context`, `passage`, `sentence2` field"),
        "{stderr}"
    );
}
