//! apply-model on the real base model: parity with the encoder and the reference file through
//! the whole path, sharding and Slurm-array coverage, kill -9 resume, exports, bad input.

use common::testing::{base_model, workspace_root as root, write_chunks};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use apply_model::{run, Format, Options, ShardBy};
use candle_core::Device;
use common::corpus::Corpus;
use common::tables::{ChunkKey, ChunkRow, ChunksReader, EmbeddingsReader};
use encoder::{cosine, Precision, SentenceEncoder};

fn options(chunks: &Path, out: &Path) -> Options {
    Options {
        model: base_model(),
        corpus: Corpus::Chunks(chunks.to_path_buf()),
        out_dir: out.to_path_buf(),
        batch_size: 4,
        max_batch_tokens: 8192,
        part_rows: 5,
        device: "cpu".into(),
        precision: Precision::F32,
        shard_by: ShardBy::Decade,
        task: None,
        exports: Vec::new(),
        empty_texts: common::corpus::EmptyTexts::Stop,
    }
}

fn read_all(path: &Path) -> (Vec<ChunkKey>, Vec<f32>) {
    EmbeddingsReader::read_all(path).unwrap()
}

/// The reference texts (blank ones excepted: not valid chunks), one document each, from 1900.
fn reference_corpus(dir: &Path) -> (PathBuf, Vec<(String, Vec<f32>)>) {
    let path = root().join("encoder/tests/data/all-MiniLM-L6-v2.embeddings.json");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let items: Vec<(String, Vec<f32>)> = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|it| {
            (
                it["text"].as_str().unwrap().to_string(),
                serde_json::from_value(it["embedding"].clone()).unwrap(),
            )
        })
        .filter(|(t, _): &(String, Vec<f32>)| !t.trim().is_empty())
        .collect();
    let rows: Vec<ChunkRow> = items
        .iter()
        .enumerate()
        .map(|(i, (t, _))| ChunkRow {
            doc_id: format!("ref{i:02}"),
            year: 1900 + i as i32,
            chunk_idx: 0,
            text: t.clone(),
        })
        .collect();
    let chunks = dir.join("chunks.parquet");
    write_chunks(&chunks, &rows);
    (chunks, items)
}

#[test]
fn embeddings_match_the_encoder_and_the_reference_whatever_the_batching() {
    let dir = tempfile::tempdir().unwrap();
    let (chunks, items) = reference_corpus(dir.path());
    let out = dir.path().join("out");
    let report = run(&options(&chunks, &out)).unwrap();
    assert_eq!(report.shards.len(), 2, "decades 1900 and 1910");
    let (mut keys, mut matrix) = read_all(&out.join("1900.parquet"));
    let (k2, m2) = read_all(&out.join("1910.parquet"));
    keys.extend(k2);
    matrix.extend(m2);
    assert_eq!(keys.len(), items.len());
    let encoder = SentenceEncoder::load(&base_model(), &Device::Cpu).unwrap();
    for (i, (text, reference)) in items.iter().enumerate() {
        let got = &matrix[i * 384..(i + 1) * 384];
        let alone = encoder.embed(&[text], 1).unwrap();
        let diff = got
            .iter()
            .zip(&alone)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "{text:?}: batched vs alone differ by {diff}");
        let rdiff = got
            .iter()
            .zip(reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            cosine(got, reference) >= 0.9999 && rdiff <= 1e-4,
            "{text:?}: reference differs by {rdiff}"
        );
    }
    assert!(common::manifest::verify(&out).unwrap().is_empty());
    assert!(
        !out.join("1900.parts").exists(),
        "parts are removed once merged"
    );
}

fn sample_subset(dir: &Path, n: usize) -> (PathBuf, Vec<ChunkRow>) {
    let all = ChunksReader::read_all(&root().join("data/sample/chunks.parquet")).unwrap();
    let step = all.len() / n;
    let rows: Vec<ChunkRow> = all.into_iter().step_by(step).take(n).collect();
    let path = dir.join("chunks.parquet");
    write_chunks(&path, &rows);
    (path, rows)
}

#[test]
fn array_tasks_cover_every_row_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (chunks, rows) = sample_subset(dir.path(), 40);
    for (by, tasks) in [
        (ShardBy::Decade, 3),
        (ShardBy::Equal(5), 2),
        (ShardBy::Years(50), 4),
    ] {
        let out = dir.path().join(format!("{by:?}"));
        let mut seen = Vec::new();
        for task in 0..tasks {
            let mut opts = options(&chunks, &out);
            opts.shard_by = by;
            opts.task = Some((task, tasks));
            opts.part_rows = 64;
            for s in run(&opts).unwrap().shards {
                let (keys, _) = read_all(&s.output);
                seen.extend(keys.into_iter().map(|k| (k.doc_id, k.chunk_idx)));
            }
        }
        let unique: HashSet<_> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), rows.len(), "{by:?}: every row once");
        assert_eq!(unique.len(), rows.len(), "{by:?}: no row twice");
        assert!(common::manifest::verify(&out).unwrap().is_empty());
    }
}

#[test]
fn killed_run_resumes_and_writes_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (chunks, _) = sample_subset(dir.path(), 240);
    let bin = env!("CARGO_BIN_EXE_apply-model");
    let cli = |out: &Path| {
        let mut c = Command::new(bin);
        c.arg("--model")
            .arg(base_model())
            .arg("--chunks")
            .arg(&chunks)
            .arg("--out")
            .arg(out);
        c.args(["--shard-by", "equal:1", "--part-rows", "16"]);
        c.env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("SLURM_ARRAY_TASK_COUNT");
        c
    };
    let whole = dir.path().join("whole");
    assert!(cli(&whole).status().unwrap().success());

    let killed = dir.path().join("killed");
    let mut child = cli(&killed)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let parts = killed.join("part-00000-of-00001.parts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !parts.join("part-00002.parquet").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no part committed in time"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let name = "part-00000-of-00001.parquet";
    assert!(!killed.join(name).exists(), "killed before the merge");
    let committed = std::fs::read_dir(&parts)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("part-")
        })
        .count();
    assert!(
        (3..15).contains(&committed),
        "{committed} parts committed before the kill"
    );

    let out = cli(&killed).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("resuming after"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(whole.join(name)).unwrap(),
        std::fs::read(killed.join(name)).unwrap(),
        "resumed output differs"
    );

    // A third run finds the shard complete and leaves it alone.
    let out = cli(&killed).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 already done"), "{stderr}");
}

#[test]
fn exports_tsv_and_npy() {
    let dir = tempfile::tempdir().unwrap();
    let (chunks, rows) = sample_subset(dir.path(), 12);
    let out = dir.path().join("out");
    let mut opts = options(&chunks, &out);
    opts.shard_by = ShardBy::Equal(1);
    opts.exports = vec![Format::Tsv, Format::Npy];
    run(&opts).unwrap();
    let stem = out.join("part-00000-of-00001");
    let (keys, matrix) = read_all(&stem.with_extension("parquet"));
    let tsv = std::fs::read_to_string(stem.with_extension("tsv")).unwrap();
    let lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(lines.len(), rows.len() + 1);
    let header: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(
        (header[0], header[1], header[2], header.len()),
        ("paperId", "chunknumber", "embedding_1", 386)
    );
    let first: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!(
        (first[0], first[1].parse::<i32>().unwrap()),
        (keys[0].doc_id.as_str(), keys[0].chunk_idx)
    );
    let values: Vec<f32> = first[2..].iter().map(|v| v.parse().unwrap()).collect();
    assert_eq!(
        values,
        matrix[..384].to_vec(),
        "TSV values round-trip exactly"
    );
    let script = "import sys, numpy as np, pyarrow.parquet as pq\n\
                  m = np.load(sys.argv[1]); ids = pq.read_table(sys.argv[2])\n\
                  assert m.dtype == np.float32 and m.shape == (12, 384), m.shape\n\
                  assert ids.num_rows == 12 and ids.column_names == ['doc_id', 'chunk_idx', 'year']\n\
                  print(repr(float(m[0, 0])))";
    let py = Command::new("python3")
        .args(["-c", script])
        .arg(stem.with_extension("npy"))
        .arg(stem.with_extension("ids.parquet"))
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&py.stdout)
            .trim()
            .parse::<f32>()
            .unwrap(),
        matrix[0]
    );
    let manifest = common::manifest::Manifest::load(&out).unwrap();
    assert!(manifest.files.contains_key("part-00000-of-00001.tsv"));
    assert!(manifest.files.contains_key("part-00000-of-00001.npy"));
}

#[test]
fn bad_input_is_named_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (chunks, _) = sample_subset(d, 6);
    let out = d.join("out");
    let mut opts = options(&chunks, &out);
    opts.shard_by = ShardBy::Equal(1);
    run(&opts).unwrap();

    // A model of another dimension (CLS + mean pooling: 768) against the existing shard.
    let wide = d.join("wide-model");
    std::fs::create_dir_all(wide.join("1_Pooling")).unwrap();
    for f in [
        "modules.json",
        "config.json",
        "sentence_bert_config.json",
        "tokenizer.json",
        "model.safetensors",
    ] {
        std::fs::copy(base_model().join(f), wide.join(f)).unwrap();
    }
    let pooling = std::fs::read_to_string(base_model().join("1_Pooling/config.json"))
        .unwrap()
        .replace(
            "\"pooling_mode_cls_token\": false",
            "\"pooling_mode_cls_token\": true",
        );
    std::fs::write(wide.join("1_Pooling/config.json"), pooling).unwrap();
    let mut wide_opts = opts.clone();
    wide_opts.model = wide;
    let e = run(&wide_opts).unwrap_err();
    assert!(
        e.is_bad_input()
            && e.to_string().contains("384-dimensional")
            && e.to_string().contains("768"),
        "{e}"
    );

    let mut other = opts.clone();
    other.batch_size = 8;
    let e = run(&other).unwrap_err().to_string();
    assert!(e.contains("differs in: batch_size"), "{e}");

    // bf16 embeddings differ from f32 ones: never mixed into one output.
    let mut half = opts.clone();
    half.precision = Precision::Bf16;
    let e = run(&half).unwrap_err().to_string();
    assert!(e.contains("differs in: precision"), "{e}");

    let mut broken = opts.clone();
    broken.model = d.join("nowhere");
    broken.out_dir = d.join("out2");
    let e = run(&broken).unwrap_err().to_string();
    assert!(
        e.contains("nowhere") && e.contains("not a directory"),
        "{e}"
    );

    let bad = d.join("bad.parquet");
    let batch = arrow::array::RecordBatch::try_from_iter(vec![
        (
            "doc_id",
            std::sync::Arc::new(arrow::array::StringArray::from(vec!["a"]))
                as arrow::array::ArrayRef,
        ),
        (
            "year",
            std::sync::Arc::new(arrow::array::Int32Array::from(vec![1900])),
        ),
    ])
    .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&bad).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let mut missing = opts.clone();
    missing.corpus = Corpus::Chunks(bad);
    missing.out_dir = d.join("out3");
    let e = run(&missing).unwrap_err().to_string();
    assert!(
        e.contains("bad.parquet") && e.contains("missing column `chunk_idx`"),
        "{e}"
    );
    for o in ["out2", "out3"] {
        let has_output = std::fs::read_dir(d.join(o))
            .map(|r| {
                r.flatten()
                    .any(|f| f.file_name().to_string_lossy().ends_with(".parquet"))
            })
            .unwrap_or(false);
        assert!(!has_output, "{o}: no output file");
    }
}
