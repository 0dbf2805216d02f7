//! The binary as Slurm runs it: kill -9 and resume, array tasks covering every centre year once,
//! identical bytes whatever the threads or split, the reference TSV layout, bad input.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_precocity"));
    for v in [
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_ARRAY_TASK_MIN",
    ] {
        c.env_remove(v);
    }
    c.env("RUST_LOG", "info");
    c
}

fn stage(emb: &Path, out: &Path) -> Command {
    let mut c = bin();
    c.arg("--embeddings").arg(emb).arg("--out").arg(out);
    c
}

#[track_caller]
fn ok(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "failed: {err}");
    String::from_utf8(out.stdout).unwrap() + &err
}

/// 30 years (1920–1949, 1931 missing), 12 documents a year, 48 dimensions, in two decade shards
/// plus what apply-model leaves beside them (exports, a parts folder) that must be ignored.
fn corpus(dir: &Path) -> std::path::PathBuf {
    let years: Vec<i32> = (1920..1950).filter(|&y| y != 1931).collect();
    let chunks = random_corpus(&years, 12, 48, 3);
    let emb = dir.join("embeddings");
    std::fs::create_dir_all(emb.join("1930.parts")).unwrap();
    let (a, b): (Vec<Chunk>, Vec<Chunk>) = chunks.into_iter().partition(|c| c.year < 1930);
    write_embeddings(&emb.join("1920.parquet"), &a);
    write_embeddings(&emb.join("1930.parquet"), &b);
    for junk in [
        "1920.ids.parquet",
        "1930.parts/part-00000.parquet",
        "1920.tsv",
        "MANIFEST.json",
    ] {
        std::fs::write(emb.join(junk), "not an embeddings table").unwrap();
    }
    emb
}

#[test]
fn array_tasks_cover_every_year_once_and_write_the_same_bytes_as_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let emb = corpus(dir.path());
    let single = dir.path().join("single");
    let text = ok(stage(&emb, &single)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap());
    // The manifest records the setting the printed top 10 is ranked by, for the report.
    assert!(
        text.contains("top 10 by precocity: fraction_compared 1.0, trainauthquote, time_radius 20, chunks_used 1.0"),
        "{text}"
    );
    assert!(common::manifest::verify(&single).unwrap().is_empty());
    let manifest = common::manifest::Manifest::load(&single).unwrap();
    assert_eq!(
        manifest.files["documents.parquet"].parameters["top_by"],
        serde_json::json!({"fraction_compared": 1.0, "filtered": "trainauthquote", "time_radius": 20, "chunks_used": 1.0})
    );

    let all: Vec<i32> = ok(stage(&emb, &single).arg("--list-years").output().unwrap())
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(all.len(), 29);
    let without_out = ok(bin()
        .arg("--embeddings")
        .arg(&emb)
        .arg("--list-years")
        .output()
        .unwrap());
    assert_eq!(
        without_out
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .collect::<Vec<_>>(),
        all
    );
    // --array=1-4: ids start at 1.
    let mut seen = BTreeSet::new();
    let split = dir.path().join("split");
    for id in 1..=4 {
        let task = |c: &mut Command| {
            c.env("SLURM_ARRAY_TASK_ID", id.to_string())
                .env("SLURM_ARRAY_TASK_COUNT", "4")
                .env("SLURM_ARRAY_TASK_MIN", "1")
                .env("RAYON_NUM_THREADS", "1");
        };
        let mut list = stage(&emb, &split);
        task(&mut list);
        let years: Vec<i32> = ok(list.arg("--list-years").output().unwrap())
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        assert!(!years.is_empty(), "task {id} has years");
        assert!(years.windows(2).all(|w| w[0] < w[1]));
        for y in years {
            assert!(seen.insert(y), "year {y} in two tasks");
        }
        let mut run = stage(&emb, &split);
        task(&mut run);
        let text = ok(run.output().unwrap());
        // Only the last task finds every year committed and writes the tables.
        assert_eq!(
            split.join("documents.tsv").exists(),
            id == 4,
            "task {id}: {text}"
        );
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), all);
    assert_eq!(
        snapshot(&split),
        snapshot(&single),
        "split into 4 tasks on 1 thread vs one run on 2"
    );
}

#[test]
fn killed_run_resumes_and_writes_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // Bigger, so the run lasts long enough to be killed half way.
    let years: Vec<i32> = (1900..1960).collect();
    let emb = dir.path().join("emb.parquet");
    write_embeddings(&emb, &random_corpus(&years, 80, 256, 5));
    let whole = dir.path().join("whole");
    ok(stage(&emb, &whole).output().unwrap());

    let killed = dir.path().join("killed");
    let mut child = stage(&emb, &killed)
        .env("RAYON_NUM_THREADS", "1")
        .spawn()
        .unwrap();
    let parts = killed.join("years");
    let start = Instant::now();
    let committed = |p: &Path| {
        std::fs::read_dir(p)
            .map(|d| {
                d.filter(|e| {
                    !e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with('.')
                })
                .count()
            })
            .unwrap_or(0)
    };
    while committed(&parts) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no year committed"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = committed(&parts);
    assert!(
        before < years.len(),
        "killed half way ({before} years committed)"
    );
    assert!(!killed.join("documents.tsv").exists() && !killed.join("chunks.parquet").exists());

    let text = ok(stage(&emb, &killed).output().unwrap());
    assert!(text.contains("already committed"), "{text}");
    assert_eq!(snapshot(&killed), snapshot(&whole));
}

/// The reference layout ({decade}.tsv + metadata) gives the same document table as Parquet.
#[test]
fn reference_layout_gives_the_same_documents() {
    let dir = tempfile::tempdir().unwrap();
    let years = [1968, 1969, 1970, 1971, 1973];
    let chunks = random_corpus(&years, 5, 16, 9);
    let emb = dir.path().join("emb.parquet");
    write_embeddings(&emb, &chunks);
    let tsv_dir = dir.path().join("tsv");
    std::fs::create_dir_all(&tsv_dir).unwrap();
    let mut files: std::collections::BTreeMap<i32, String> = Default::default();
    let mut meta = String::from("paperId\ttitle\tyear\n");
    let mut docs = BTreeSet::new();
    for c in &chunks {
        let f = files.entry(c.year / 10 * 10).or_insert_with(|| {
            let mut h = "paperId\tchunknumber".to_string();
            (1..=16).for_each(|i| h += &format!("\tembedding_{i}"));
            h + "\n"
        });
        let vals: Vec<String> = c.vec.iter().map(|x| format!("{x:?}")).collect();
        *f += &format!("{}\t{}\t{}\n", c.doc, c.idx, vals.join("\t"));
        if docs.insert(c.doc.clone()) {
            meta += &format!("{}\tt\t{}.0\n", c.doc, c.year);
        }
    }
    // A chunk of a document the metadata does not have: skipped, as the reference does.
    files
        .get_mut(&1970)
        .unwrap()
        .push_str(&format!("stray\t0{}\n", "\t0.5".repeat(16)));
    for (decade, text) in files {
        std::fs::write(tsv_dir.join(format!("{decade}.tsv")), text).unwrap();
    }
    std::fs::write(dir.path().join("meta.tsv"), meta).unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    ok(stage(&emb, &a).output().unwrap());
    let text = ok(bin()
        .arg("--reference-dir")
        .arg(&tsv_dir)
        .arg("--metadata")
        .arg(dir.path().join("meta.tsv"))
        .arg("--out")
        .arg(&b)
        .output()
        .unwrap());
    assert!(text.contains("top 10"), "{text}");
    assert_eq!(
        std::fs::read(a.join("documents.tsv")).unwrap(),
        std::fs::read(b.join("documents.tsv")).unwrap()
    );
}

#[test]
fn bad_input_is_named_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let emb = dir.path().join("emb");
    std::fs::create_dir_all(&emb).unwrap();
    write_embeddings(
        &emb.join("1900.parquet"),
        &[
            chunk("a", 0, 1900, &[1.0, 0.0, 0.0]),
            chunk("b", 0, 1901, &[0.0, 1.0, 0.0]),
        ],
    );
    write_embeddings(
        &emb.join("1910.parquet"),
        &[chunk("c", 0, 1910, &[1.0, 0.0, 0.0, 0.0])],
    );
    let out = stage(&emb, &dir.path().join("out")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("1910.parquet") && err.contains("4-dimensional"),
        "{err}"
    );

    let one = dir.path().join("nan.parquet");
    write_embeddings(
        &one,
        &[
            chunk("a", 0, 1900, &[1.0, 0.0]),
            chunk("b", 0, 1901, &[f32::NAN, 1.0]),
        ],
    );
    let out = stage(&one, &dir.path().join("out2")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("nan.parquet") && err.contains("row 1") && err.contains("NaN"),
        "{err}"
    );

    let dup = dir.path().join("dup.parquet");
    write_embeddings(
        &dup,
        &[
            chunk("a", 0, 1900, &[1.0, 0.0]),
            chunk("a", 0, 1900, &[0.0, 1.0]),
        ],
    );
    let out = stage(&dup, &dir.path().join("out3")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("row 1") && err.contains("appears twice"),
        "{err}"
    );

    let out = stage(&one, &dir.path().join("out4"))
        .args(["--fractions", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin().arg("--out").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "no input given");
}

/// pandas reads documents.tsv and documents.parquet as the same frame with the reference's
/// columns (nulls as NaN), and polars reads chunks.parquet: no glue needed downstream.
#[test]
fn pandas_and_polars_read_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    let emb = dir.path().join("emb.parquet");
    write_embeddings(&emb, &random_corpus(&[1990, 1991, 1993], 4, 8, 13));
    let out = dir.path().join("out");
    ok(stage(&emb, &out).output().unwrap());
    let script = "import sys, pandas as pd, polars as pl\n\
                  d = sys.argv[1]\n\
                  t = pd.read_csv(d + '/documents.tsv', sep='\\t')\n\
                  p = pd.read_parquet(d + '/documents.parquet')\n\
                  cols = ['docid', 'date', 'num_chunks', 'fraction_compared', 'filtered', 'time_radius', 'chunks_used', 'precocity', 'novelty', 'transience']\n\
                  assert list(t.columns) == cols and list(p.columns) == cols, (list(t.columns), list(p.columns))\n\
                  pd.testing.assert_frame_equal(t, p, check_dtype=False, check_exact=True)\n\
                  c = pl.read_parquet(d + '/chunks.parquet')\n\
                  assert c.columns == ['doc_id', 'chunk_idx', 'year', 'fraction_compared', 'filtered', 'time_radius', 'precocity', 'novelty', 'transience'], c.columns\n\
                  print(len(t), int(t.precocity.isna().sum()), c.height)";
    let py = Command::new("python3")
        .args(["-c", script])
        .arg(&out)
        .output()
        .expect("python3 must be installed (scripts/requirements-test.txt)");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let counts: Vec<usize> = String::from_utf8_lossy(&py.stdout)
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    // 12 documents × 3 fractions × 4 filters × 2 radii × 2 aggregates; the first and last
    // years' documents have no precocity (no past / no future).
    assert_eq!(counts[0], 12 * 48);
    assert_eq!(counts[1], 8 * 48);
}
