//! select-pairs on real Parquet files: properties of the selection, the per-year cap,
//! reproducibility, the sample corpus through both input layouts, and bad input.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use common::chunk_files::ChunkFileLayout;
use common::corpus::Corpus;
use common::provenance::Provenance;
use common::schema::{Category, Side};
use common::tables::{ChunkRow, ChunksWriter, PairsReader};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use select_pairs::select::{choose, Params};
use select_pairs::{run, Options};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A corpus of `docs` documents of 1–30 chunks over 1900–1949, written as `chunks` Parquet.
fn synthetic_corpus(path: &Path, docs: usize, seed: u64) -> Vec<ChunkRow> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rows = Vec::new();
    for d in 0..docs {
        let n = rng.random_range(1..=30);
        let year = 1900 + rng.random_range(0..50);
        for c in 0..n {
            rows.push(ChunkRow {
                doc_id: format!("doc{d:05}"),
                year,
                chunk_idx: c,
                text: format!("doc {d} chunk {c}"),
            });
        }
    }
    let mut w =
        ChunksWriter::create(path, &Provenance::new("test", "0", serde_json::Value::Null)).unwrap();
    for r in &rows {
        w.push(r.clone()).unwrap();
    }
    w.finish().unwrap();
    rows
}

fn options(corpus: Corpus, out: PathBuf) -> Options {
    Options {
        corpus,
        out,
        seed: 42,
        from_year: None,
        to_year: None,
        per_year: None,
        cap_rank: 25,
        params: Params::default(),
        held_out: None,
    }
}

/// The chunk positions a pair covers (one for single-synthetic).
fn span(anchor: usize, positive: usize) -> (usize, usize) {
    (anchor.min(positive), anchor.max(positive))
}

#[test]
fn derived_seeds_differ_by_seed_and_label() {
    use select_pairs::derive_seed;
    let seeds = [
        derive_seed(42, b"a"),
        derive_seed(43, b"a"),
        derive_seed(42, b"b"),
        derive_seed(0, b""),
        derive_seed(1, b""),
    ];
    let distinct: std::collections::HashSet<u64> = seeds.iter().copied().collect();
    assert_eq!(distinct.len(), seeds.len(), "{seeds:?}");
}

#[test]
fn adjacent_pairs_never_touch_and_categories_follow_the_weights() {
    let params = Params::default();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut cats: HashMap<Category, usize> = HashMap::new();
    let (mut adjacent_docs, mut random_docs, mut swaps, mut total) = (0, 0, 0, 0);
    for doc in 0..40_000 {
        let n = 2 + doc % 19; // 2..=20: the random-pair branch is possible
        let pairs = choose(n, &params, &mut rng).unwrap();
        if pairs[0].category == Category::RandomPair {
            random_docs += 1;
            assert_eq!(pairs.len(), 1);
            assert_ne!(pairs[0].anchor, pairs[0].positive);
            continue;
        }
        adjacent_docs += 1;
        assert!(pairs.len() <= n.div_ceil(8));
        for w in pairs.windows(2) {
            let (a, b) = (
                span(w[0].anchor, w[0].positive),
                span(w[1].anchor, w[1].positive),
            );
            // Starts i−2 … i+3 are blocked: at least one chunk between any two pairs.
            let (first, second) = if a.0 < b.0 { (a, b) } else { (b, a) };
            assert!(
                second.0 >= first.0 + 3,
                "pairs {a:?} and {b:?} touch in a document of {n}"
            );
        }
        for p in &pairs {
            total += 1;
            *cats.entry(p.category).or_default() += 1;
            let (lo, hi) = span(p.anchor, p.positive);
            match p.category {
                Category::SingleSynthetic => assert_eq!(lo, hi),
                _ => assert_eq!(hi, lo + 1),
            }
            if p.anchor > p.positive || p.paraphrase == Some(Side::Anchor) {
                swaps += 1;
            }
        }
    }
    let share = |c| cats.get(&c).copied().unwrap_or(0) as f64 / total as f64;
    assert!(
        (share(Category::Successive) - 0.91).abs() < 0.01,
        "{cats:?}"
    );
    assert!(
        (share(Category::SyntheticPair) - 0.02).abs() < 0.005,
        "{cats:?}"
    );
    assert!(
        (share(Category::SingleSynthetic) - 0.07).abs() < 0.008,
        "{cats:?}"
    );
    let random_share = random_docs as f64 / (random_docs + adjacent_docs) as f64;
    assert!(
        (random_share - 0.02).abs() < 0.005,
        "random-pair share {random_share}"
    );
    let swap_share = swaps as f64 / total as f64;
    assert!((swap_share - 0.5).abs() < 0.02, "swap share {swap_share}");
    // Long documents always get adjacent pairs, exactly ceil(n/8) when spacing allows.
    for _ in 0..1000 {
        let pairs = choose(40, &params, &mut rng).unwrap();
        assert!(pairs.iter().all(|p| p.category != Category::RandomPair));
        assert!(pairs.len() <= 5);
    }
}

#[test]
fn no_paraphrase_mode_gives_successive_non_overlapping_pairs() {
    let params = Params::no_paraphrase();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for n in 2..60 {
        let pairs = choose(n, &params, &mut rng).unwrap();
        assert!(pairs
            .iter()
            .all(|p| p.category == Category::Successive && p.paraphrase.is_none()));
        let mut used = vec![false; n];
        for p in &pairs {
            for i in [p.anchor, p.positive] {
                assert!(!used[i], "chunk {i} used twice in a document of {n}");
                used[i] = true;
            }
        }
    }
    assert!(
        choose(1, &params, &mut rng).is_err(),
        "single-chunk documents are skipped"
    );
}

#[test]
fn per_year_cap_and_reproducibility_on_a_parquet_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = dir.path().join("chunks.parquet");
    synthetic_corpus(&chunks, 3000, 7);
    let out = |name: &str| dir.path().join(name);

    let mut opts = options(Corpus::Chunks(chunks.clone()), out("a.parquet"));
    let report = run(&opts).unwrap();
    assert!(report.cap > 0);
    for (year, c) in &report.per_year {
        assert!(
            c.after_cap <= report.cap && c.after_cap == c.before_cap.min(report.cap),
            "{year}: {c:?}"
        );
    }
    let mut sorted: Vec<usize> = report.per_year.values().map(|c| c.before_cap).collect();
    sorted.sort();
    assert_eq!(report.cap, sorted[24], "cap = 25th smallest yearly count");
    let pairs = PairsReader::read_all(&out("a.parquet")).unwrap();
    assert_eq!(pairs.len(), report.pairs);
    let ids: std::collections::HashSet<&str> = pairs.iter().map(|p| p.pair_id.as_str()).collect();
    assert_eq!(ids.len(), pairs.len(), "pair ids are unique");

    // Same seed: byte-identical, whatever the thread count.
    opts.out = out("b.parquet");
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| run(&opts))
        .unwrap();
    assert_eq!(
        std::fs::read(out("a.parquet")).unwrap(),
        std::fs::read(out("b.parquet")).unwrap()
    );
    // Another seed: another selection.
    opts.out = out("c.parquet");
    opts.seed = 43;
    run(&opts).unwrap();
    assert!(
        PairsReader::read_all(&out("c.parquet")).unwrap() != pairs,
        "seed 43 selected what seed 42 did"
    );
    // --per-year bounds the cap.
    opts.per_year = Some(3);
    opts.out = out("d.parquet");
    let r = run(&opts).unwrap();
    assert_eq!(r.cap, 3);
    assert!(r.per_year.values().all(|c| c.after_cap <= 3));
}

#[test]
fn flagged_rows_have_a_null_side_or_a_side_to_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = dir.path().join("chunks.parquet");
    synthetic_corpus(&chunks, 3000, 9);
    let out = dir.path().join("pairs.parquet");
    run(&options(Corpus::Chunks(chunks), out.clone())).unwrap();
    let pairs = PairsReader::read_all(&out).unwrap();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &pairs {
        *seen.entry(p.category.as_str()).or_default() += 1;
        match p.category {
            Category::SingleSynthetic => {
                let side = p.paraphrase_side.expect("flagged");
                let (missing, present) = match side {
                    Side::Anchor => (&p.anchor, &p.positive),
                    Side::Positive => (&p.positive, &p.anchor),
                };
                assert!(missing.is_none() && present.is_some(), "{p:?}");
            }
            Category::SyntheticPair => {
                assert!(p.paraphrase_side.is_some() && p.anchor.is_some() && p.positive.is_some())
            }
            _ => assert!(p.paraphrase_side.is_none() && p.anchor.is_some() && p.positive.is_some()),
        }
    }
    assert_eq!(seen.len(), 4, "all categories occur: {seen:?}");
}

#[test]
fn sample_corpus_gives_the_same_pairs_from_parquet_and_chunk_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a/pairs.parquet");
    let b = dir.path().join("b/pairs.parquet");
    let ra = run(&options(
        Corpus::Chunks(root().join("data/sample/chunks.parquet")),
        a.clone(),
    ))
    .unwrap();
    let rb = run(&options(
        Corpus::ChunkFiles(ChunkFileLayout::in_dir(&root().join("data/sample"))),
        b.clone(),
    ))
    .unwrap();
    assert!(ra.pairs > 100, "{ra:?}");
    assert_eq!(ra.pairs, rb.pairs);
    assert_eq!(
        PairsReader::read_all(&a).unwrap(),
        PairsReader::read_all(&b).unwrap()
    );
    assert!(common::manifest::verify(&dir.path().join("a"))
        .unwrap()
        .is_empty());
    // A year range keeps only those years.
    let mut opts = options(
        Corpus::Chunks(root().join("data/sample/chunks.parquet")),
        dir.path().join("c.parquet"),
    );
    opts.from_year = Some(1900);
    opts.to_year = Some(1949);
    let r = run(&opts).unwrap();
    assert!(r.per_year.keys().all(|y| (1900..=1949).contains(y)));
    assert!(r.skipped_documents["outside-year-range"] > 100);
}

#[test]
fn single_chunk_documents() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = dir.path().join("chunks.parquet");
    let mut w =
        ChunksWriter::create(&chunks, &Provenance::new("t", "0", serde_json::Value::Null)).unwrap();
    for d in 0..50 {
        w.push(ChunkRow {
            doc_id: format!("d{d}"),
            year: 1900 + d % 5,
            chunk_idx: 3,
            text: format!("only chunk {d}"),
        })
        .unwrap();
    }
    w.push(ChunkRow {
        doc_id: "long".into(),
        year: 1900,
        chunk_idx: 0,
        text: "a".into(),
    })
    .unwrap();
    w.push(ChunkRow {
        doc_id: "long".into(),
        year: 1900,
        chunk_idx: 1,
        text: "b".into(),
    })
    .unwrap();
    w.finish().unwrap();
    let out = dir.path().join("pairs.parquet");
    let r = run(&options(Corpus::Chunks(chunks.clone()), out.clone())).unwrap();
    let pairs = PairsReader::read_all(&out).unwrap();
    assert!(r.per_category["single-synthetic"] >= 40, "{r:?}");
    let p = pairs.iter().find(|p| p.doc_id == "d7").unwrap();
    assert_eq!(p.pair_id, "d7#3");
    assert!(p.anchor.is_none() != p.positive.is_none());

    let mut opts = options(Corpus::Chunks(chunks), dir.path().join("np.parquet"));
    opts.params = Params::no_paraphrase();
    let r = run(&opts).unwrap();
    assert_eq!(r.skipped_documents["single-chunk"], 50);
    assert_eq!(r.pairs, 1);
}

#[test]
fn bad_input_is_named_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = dir.path().join("dup.parquet");
    let mut w =
        ChunksWriter::create(&chunks, &Provenance::new("t", "0", serde_json::Value::Null)).unwrap();
    for (doc, idx) in [("a", 0), ("a", 1), ("b", 0), ("a", 1)] {
        w.push(ChunkRow {
            doc_id: doc.into(),
            year: 1900,
            chunk_idx: idx,
            text: "t".into(),
        })
        .unwrap();
    }
    w.finish().unwrap();
    let out = dir.path().join("out/pairs.parquet");
    let e = run(&options(Corpus::Chunks(chunks), out.clone())).unwrap_err();
    let msg = e.to_string();
    assert!(
        e.is_bad_input()
            && msg.contains("dup.parquet")
            && msg.contains("row 3")
            && msg.contains("duplicate chunk"),
        "{msg}"
    );
    assert!(!out.exists());

    let mut opts = options(
        Corpus::Chunks(root().join("data/sample/chunks.parquet")),
        out.clone(),
    );
    opts.from_year = Some(3000);
    let msg = run(&opts).unwrap_err().to_string();
    assert!(msg.contains("no document in the year range"), "{msg}");
    assert!(!out.exists());

    let empty = dir.path().join("empty.parquet");
    std::fs::write(&empty, b"").unwrap();
    let msg = run(&options(Corpus::Chunks(empty), out.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("empty.parquet") && msg.contains("empty"),
        "{msg}"
    );
    assert!(!out.exists());
}

#[test]
fn cli_writes_pairs_and_report_and_exits_2_on_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pairs.parquet");
    let report = dir.path().join("report.json");
    let bin = env!("CARGO_BIN_EXE_select-pairs");
    let status = std::process::Command::new(bin)
        .args(["--chunk-files"])
        .arg(root().join("data/sample"))
        .arg("--out")
        .arg(&out)
        .arg("--report")
        .arg(&report)
        .arg("--no-paraphrase")
        .status()
        .unwrap();
    assert!(status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        report["per_category"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["successive"]
    );
    assert!(report["per_year"]["1790"]["before_cap"].as_u64().unwrap() >= 1);
    let bad = std::process::Command::new(bin)
        .arg("--chunks")
        .arg(dir.path().join("missing.parquet"))
        .arg("--out")
        .arg(dir.path().join("x.parquet"))
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(1),
        "a missing file is an I/O error: {}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let csv = dir.path().join("not.parquet");
    std::fs::write(&csv, "a,b\n").unwrap();
    let bad = std::process::Command::new(bin)
        .arg("--chunks")
        .arg(&csv)
        .arg("--out")
        .arg(dir.path().join("x.parquet"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not.parquet"));
}
