//! The report on a run folder built from the bundled sample corpus: real Parquet files in each
//! stage's format (pairs from the corpus' successive chunks, embeddings from the real base
//! model, a metrics log and training args in tune-embeddings' format, precocity tables in the
//! precocity stage's schema). Every number the page shows is recomputed here from those inputs
//! and compared with the parsed HTML and SVG.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int32Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use common::provenance::Provenance;
use common::schema::{precocity_chunks as pc, precocity_documents as pd, Category};
use common::tables::{ChunkKey, ChunkRow, ChunksReader, EmbeddingsWriter, PairRow};
use encoder::SentenceEncoder;
use report::corpus::sample_key;
use report::{run, Options};

const MAP_SAMPLE: usize = 40;

fn sample_corpus() -> PathBuf {
    common::testing::workspace_root().join("data/sample/chunks.parquet")
}

fn chunks() -> Vec<ChunkRow> {
    ChunksReader::read_all(&sample_corpus()).unwrap()
}

fn provenance(stage: &str) -> Provenance {
    Provenance::new(stage, "0.1.0", serde_json::json!({"test": true}))
}

/// pairs/pairs.parquet: successive chunks of every document; report.json as select-pairs
/// writes it (before the cap = after the cap + 1 in every year, so the two differ).
fn write_pairs(run: &Path, corpus: &[ChunkRow]) -> Vec<PairRow> {
    let mut rows = Vec::new();
    for w in corpus.windows(2) {
        if w[0].doc_id == w[1].doc_id && rows.len() < 600 {
            rows.push(PairRow {
                pair_id: format!("p{}", rows.len()),
                doc_id: w[0].doc_id.clone(),
                year: w[0].year,
                anchor: Some(w[0].text.clone()),
                positive: Some(w[1].text.clone()),
                negative: None,
                category: if rows.len() % 10 == 0 {
                    Category::RandomPair
                } else {
                    Category::Successive
                },
                paraphrase_side: None,
                provenance: Default::default(),
            });
        }
    }
    std::fs::create_dir_all(run.join("pairs")).unwrap();
    common::tables::write_pairs(
        &run.join("pairs/pairs.parquet"),
        &rows,
        &provenance("select-pairs"),
    )
    .unwrap();
    let mut per_year: BTreeMap<i32, usize> = BTreeMap::new();
    for r in &rows {
        *per_year.entry(r.year).or_default() += 1;
    }
    let report = serde_json::json!({
        "pairs": rows.len(),
        "cap": 9,
        "per_year": per_year.iter().map(|(y, n)| (y.to_string(), serde_json::json!({"before_cap": n + 1, "after_cap": n}))).collect::<serde_json::Map<_, _>>(),
        "skipped_documents": {"one chunk": 3},
    });
    std::fs::write(
        run.join("pairs/report.json"),
        serde_json::to_vec_pretty(&report).unwrap(),
    )
    .unwrap();
    rows
}

/// model/: the metrics log, training args and card as tune-embeddings writes them; the best
/// evaluation is step 20 (not the last), with time measures in the evaluations.
fn write_model(run: &Path) {
    let dir = run.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    let mut log = String::new();
    for step in 1..=30u64 {
        let loss = 2.0 / (1.0 + step as f64 / 10.0);
        log.push_str(&format!(
            "{{\"kind\":\"train\",\"step\":{step},\"epoch\":0,\"loss\":{loss},\"lr\":5e-5,\"grad_norm\":1.0,\"loss_scale\":null,\"applied\":true,\"pairs_per_second\":8.0}}\n"
        ));
        if step % 10 == 0 || step == 1 {
            let s = if step == 1 { 0 } else { step };
            let mrr = match s {
                0 => 0.5,
                10 => 0.55,
                20 => 0.62,
                _ => 0.60,
            };
            log.push_str(&format!(
                "{{\"kind\":\"eval\",\"step\":{s},\"epoch\":0,\"metrics\":{{\"accuracy\":0.9,\"mrr@10\":{mrr},\"recall@1\":0.4,\"recall@10\":0.8,\"corpus\":{{\"knn_year_error\":{},\"same_decade_share\":0.3}}}}}}\n",
                30.0 - s as f64 / 2.0
            ));
        }
    }
    std::fs::write(dir.join("metrics.jsonl"), log).unwrap();
    let args = serde_json::json!({
        "options": {"epochs": 1, "batch_size": 32, "lr": 5e-5, "base_model": "no/such/model"},
        "steps": 30, "total_steps": 30, "warmup_steps": 3,
        "best": {"metric": "mrr@10", "value": 0.62, "step": 20},
    });
    std::fs::write(
        dir.join("training_args.json"),
        serde_json::to_vec_pretty(&args).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("README.md"),
        "- **Training data:** pairs.parquet (480 training, 120 held-out examples; sha256 x)\n",
    )
    .unwrap();
}

/// embeddings/: the sampled chunks and some others, embedded by the real base model, in two
/// shards.
fn write_embeddings(run: &Path, corpus: &[ChunkRow], seed: u64) {
    let mut order: Vec<&ChunkRow> = corpus.iter().collect();
    order.sort_by_key(|c| sample_key(seed, &c.doc_id, c.chunk_idx));
    let chosen = &order[..MAP_SAMPLE + 10];
    let encoder =
        SentenceEncoder::load(&common::testing::base_model(), &candle_core::Device::Cpu).unwrap();
    let texts: Vec<&str> = chosen.iter().map(|c| c.text.as_str()).collect();
    let vectors = encoder.embed(&texts, 16).unwrap();
    let dim = encoder.dim();
    let dir = run.join("embeddings");
    std::fs::create_dir_all(&dir).unwrap();
    for (part, range) in [(0, 0..25), (1, 25..chosen.len())] {
        let path = dir.join(format!("part-{part}.parquet"));
        let mut w = EmbeddingsWriter::create(&path, dim, &provenance("apply-model")).unwrap();
        let keys: Vec<ChunkKey> = chosen[range.clone()]
            .iter()
            .map(|c| ChunkKey {
                doc_id: c.doc_id.clone(),
                chunk_idx: c.chunk_idx,
                year: c.year,
            })
            .collect();
        w.write(&keys, &vectors[range.start * dim..range.end * dim])
            .unwrap();
        w.finish().unwrap();
    }
}

/// precocity/: two settings; the second ("train", radius 20) has more defined values and is
/// the one shown. Document d's precocity is its index / 100, null for every 7th.
fn write_precocity(run: &Path, corpus: &[ChunkRow]) -> Vec<(String, i32, Option<f64>)> {
    let mut docs: Vec<(String, i32)> = Vec::new();
    for c in corpus {
        if docs.last().map(|d| &d.0) != Some(&c.doc_id) {
            docs.push((c.doc_id.clone(), c.year));
        }
    }
    let shown: Vec<(String, i32, Option<f64>)> = docs
        .iter()
        .enumerate()
        .map(|(i, (d, y))| (d.clone(), *y, (i % 7 != 0).then_some(i as f64 / 100.0)))
        .collect();
    let dir = run.join("precocity");
    std::fs::create_dir_all(&dir).unwrap();
    let f = |n: &str, t: DataType, null: bool| Field::new(n, t, null);
    let doc_schema = Arc::new(Schema::new(vec![
        f(pd::DOCID, DataType::Utf8, false),
        f(pd::DATE, DataType::Int32, false),
        f(pd::NUM_CHUNKS, DataType::Int32, false),
        f(pd::FRACTION_COMPARED, DataType::Float64, false),
        f(pd::FILTERED, DataType::Utf8, false),
        f(pd::TIME_RADIUS, DataType::Int32, false),
        f(pd::CHUNKS_USED, DataType::Float64, false),
        f(pd::PRECOCITY, DataType::Float64, true),
        f(pd::NOVELTY, DataType::Float64, true),
        f(pd::TRANSIENCE, DataType::Float64, true),
    ]));
    // Setting A (shown): every document; setting B: only the first ten, all defined.
    // (docid, year, filtered, time radius, precocity)
    type Row = (String, i32, String, i32, Option<f64>);
    let cols: Vec<Vec<Row>> = vec![
        shown
            .iter()
            .map(|(d, y, p)| (d.clone(), *y, "train".to_string(), 20, *p))
            .collect(),
        shown[..10]
            .iter()
            .map(|(d, y, _)| (d.clone(), *y, "no filter".to_string(), 10, Some(9.0)))
            .collect(),
    ];
    let rows: Vec<_> = cols.into_iter().flatten().collect();
    let batch = arrow::array::RecordBatch::try_new(
        doc_schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.0.as_str()),
            )) as ArrayRef,
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|_| 3))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|_| 0.05))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.2.as_str()),
            )),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.3))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|_| 1.0))),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.4))),
            Arc::new(Float64Array::from_iter(
                rows.iter().map(|r| r.4.map(|p| p + 1.0)),
            )),
            Arc::new(Float64Array::from_iter(rows.iter().map(|_| Some(1.0)))),
        ],
    )
    .unwrap();
    write_parquet(&dir.join("documents.parquet"), &batch);
    // Chunks of setting A: chunk precocity = document precocity + chunk_idx / 1000, so the
    // most precocious chunk is each document's last.
    let chunk_schema = Arc::new(Schema::new(vec![
        f(pc::DOC_ID, DataType::Utf8, false),
        f(pc::CHUNK_IDX, DataType::Int32, false),
        f(pc::YEAR, DataType::Int32, false),
        f(pc::FRACTION_COMPARED, DataType::Float64, false),
        f(pc::FILTERED, DataType::Utf8, false),
        f(pc::TIME_RADIUS, DataType::Int32, false),
        f(pc::PRECOCITY, DataType::Float64, true),
        f(pc::NOVELTY, DataType::Float64, true),
        f(pc::TRANSIENCE, DataType::Float64, true),
    ]));
    let prec: BTreeMap<&str, Option<f64>> =
        shown.iter().map(|(d, _, p)| (d.as_str(), *p)).collect();
    let cp: Vec<Option<f64>> = corpus
        .iter()
        .map(|c| prec[c.doc_id.as_str()].map(|p| p + c.chunk_idx as f64 / 1000.0))
        .collect();
    let batch = arrow::array::RecordBatch::try_new(
        chunk_schema,
        vec![
            Arc::new(StringArray::from_iter_values(
                corpus.iter().map(|c| c.doc_id.as_str()),
            )) as ArrayRef,
            Arc::new(Int32Array::from_iter_values(
                corpus.iter().map(|c| c.chunk_idx),
            )),
            Arc::new(Int32Array::from_iter_values(corpus.iter().map(|c| c.year))),
            Arc::new(Float64Array::from_iter_values(corpus.iter().map(|_| 0.05))),
            Arc::new(StringArray::from_iter_values(
                corpus.iter().map(|_| "train"),
            )),
            Arc::new(Int32Array::from_iter_values(corpus.iter().map(|_| 20))),
            Arc::new(Float64Array::from_iter(cp.iter().copied())),
            Arc::new(Float64Array::from_iter(cp.iter().copied())),
            Arc::new(Float64Array::from_iter(cp.iter().map(|_| Some(0.0)))),
        ],
    )
    .unwrap();
    write_parquet(&dir.join("chunks.parquet"), &batch);
    shown
}

fn write_parquet(path: &Path, batch: &arrow::array::RecordBatch) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// The page as an XML tree (the page is well-formed XML by design).
fn parse(html: &str) -> roxmltree::Document<'_> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(html, opts).expect("index.html is well-formed XML")
}

fn by_class<'a, 'i>(doc: &'a roxmltree::Document<'i>, class: &str) -> Vec<roxmltree::Node<'a, 'i>> {
    doc.descendants()
        .filter(|n| {
            n.attribute("class")
                .is_some_and(|c| c.split(' ').any(|x| x == class))
        })
        .collect()
}

fn text_of(n: roxmltree::Node) -> String {
    n.descendants()
        .filter(|d| d.is_text())
        .map(|d| d.text().unwrap_or(""))
        .collect()
}

/// The text of the one element with `class` (a span carrying a number).
fn value(doc: &roxmltree::Document, class: &str) -> String {
    let nodes = by_class(doc, class);
    assert_eq!(nodes.len(), 1, "one element of class {class}");
    text_of(nodes[0])
}

/// Rows (cell texts) of the table with `class`.
fn table(doc: &roxmltree::Document, class: &str) -> Vec<Vec<String>> {
    let t = by_class(doc, class)
        .into_iter()
        .find(|n| n.has_tag_name("table"))
        .unwrap_or_else(|| panic!("table {class}"));
    t.descendants()
        .filter(|n| n.has_tag_name("tr") && n.parent().is_some_and(|p| p.has_tag_name("tbody")))
        .map(|tr| {
            tr.children()
                .filter(|c| c.has_tag_name("td"))
                .map(text_of)
                .collect()
        })
        .collect()
}

fn section_note(doc: &roxmltree::Document, id: &str) -> Option<String> {
    let sec = doc
        .descendants()
        .find(|n| n.has_tag_name("section") && n.attribute("id") == Some(id))
        .unwrap_or_else(|| panic!("section {id}"));
    sec.children()
        .find(|n| n.attribute("class") == Some("note missing-input"))
        .map(text_of)
}

fn options(run: &Path, out: &Path) -> Options {
    let mut o = Options::new(run, out);
    o.corpus = Some(sample_corpus());
    o.base_model = Some(common::testing::base_model());
    o.map_sample = MAP_SAMPLE;
    o
}

#[test]
fn every_section_shows_the_numbers_of_its_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let corpus = chunks();
    let pairs = write_pairs(&run_dir, &corpus);
    write_model(&run_dir);
    write_embeddings(&run_dir, &corpus, 42);
    let precocity = write_precocity(&run_dir, &corpus);
    let out = tmp.path().join("report");
    let report = run(&options(&run_dir, &out)).unwrap();
    assert_eq!(report.index, out.join("index.html"));
    assert!(
        report.sections.iter().all(|(_, note)| note.is_none()),
        "{:?}",
        report.sections
    );
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let doc = parse(&html);
    for id in [
        "corpus",
        "pairs",
        "training",
        "embeddings",
        "time",
        "precocity",
    ] {
        assert_eq!(section_note(&doc, id), None, "section {id} is shown");
    }
    // Self-contained: no script, nothing fetched.
    assert!(!html.contains("<script"));
    assert!(!html.contains("src=\"http"));
    assert!(!html.contains("href=\"http"));

    // Corpus: counts per decade, recomputed.
    let docs: HashSet<&str> = corpus.iter().map(|c| c.doc_id.as_str()).collect();
    assert_eq!(value(&doc, "documents"), docs.len().to_string());
    assert_eq!(value(&doc, "chunks"), corpus.len().to_string());
    let mut per_decade: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
    let mut seen = HashSet::new();
    for c in &corpus {
        let e = per_decade.entry(c.year.div_euclid(10) * 10).or_default();
        e.1 += 1;
        if seen.insert(c.doc_id.clone()) {
            e.0 += 1;
        }
    }
    let expected: Vec<Vec<String>> = per_decade
        .iter()
        .map(|(d, (a, b))| vec![d.to_string(), a.to_string(), b.to_string()])
        .collect();
    assert_eq!(table(&doc, "corpus-per-year"), expected);
    // The SVG: one grey bar per decade in each panel.
    let svg = std::fs::read_to_string(out.join("corpus-per-year.svg")).unwrap();
    let svg_doc = roxmltree::Document::parse(&svg).unwrap();
    let bars = svg_doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some("#828282"))
        .count();
    assert_eq!(bars, 2 * per_decade.len());
    assert!(svg.contains("Documents and chunks per decade"));
    // Token lengths: every chunk tokenized (the sample is small), the model's 256 marked.
    assert_eq!(value(&doc, "tokenized"), corpus.len().to_string());
    assert_eq!(value(&doc, "max-seq-length"), "256");
    let hist: u64 = table(&doc, "corpus-token-lengths")
        .iter()
        .map(|r| r[1].parse::<u64>().unwrap())
        .sum();
    assert_eq!(hist, corpus.len() as u64);
    let truncated: u64 = table(&doc, "corpus-token-lengths")
        .iter()
        .filter(|r| {
            r[0].split('\u{2013}')
                .next()
                .unwrap()
                .parse::<u32>()
                .unwrap()
                >= 256
        })
        .map(|r| r[1].parse::<u64>().unwrap())
        .sum();
    assert!(truncated > 0, "the sample has chunks over 256 tokens");
    assert_eq!(value(&doc, "truncated"), truncated.to_string());

    // Pairs: per category, and before/after the cap per decade.
    assert_eq!(value(&doc, "pairs"), pairs.len().to_string());
    let random = pairs
        .iter()
        .filter(|p| p.category == Category::RandomPair)
        .count();
    let cats = table(&doc, "pairs-per-category");
    assert_eq!(
        cats[0][..2],
        ["successive".to_string(), (pairs.len() - random).to_string()]
    );
    assert_eq!(
        cats[1][..2],
        ["random-pair".to_string(), random.to_string()]
    );
    let mut cap: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
    let mut years: BTreeMap<i32, u64> = BTreeMap::new();
    for p in &pairs {
        *years.entry(p.year).or_default() += 1;
    }
    for (y, n) in years {
        let e = cap.entry(y.div_euclid(10) * 10).or_default();
        e.0 += n + 1;
        e.1 += n;
    }
    let expected: Vec<Vec<String>> = cap
        .iter()
        .map(|(d, (b, a))| vec![d.to_string(), b.to_string(), a.to_string()])
        .collect();
    assert_eq!(table(&doc, "pairs-per-year"), expected);
    assert!(out.join("pairs-per-year.svg").is_file());

    // Training: 30 steps, 4 evaluations, the saved one (step 20) marked; base vs tuned.
    assert_eq!(value(&doc, "steps"), "30");
    assert_eq!(value(&doc, "evaluations"), "4");
    let evals = by_class(&doc, "training-evals")[0];
    let chosen: Vec<String> = evals
        .descendants()
        .filter(|n| n.attribute("class") == Some("chosen"))
        .map(|tr| text_of(tr.first_element_child().unwrap()))
        .collect();
    assert_eq!(chosen, ["20"]);
    let cmp = table(&doc, "training-comparison");
    let mrr = cmp.iter().find(|r| r[0] == "mrr@10").unwrap();
    assert_eq!(mrr[1..4], ["0.5000", "0.6200", "0.1200"]);
    // recall@1 = 0.4 over 120 held-out examples: s.e. sqrt(0.4 · 0.6 / 120) = 0.0447.
    let r1 = cmp.iter().find(|r| r[0] == "recall@1").unwrap();
    assert_eq!(r1[4], "\u{b1}0.0447 / \u{b1}0.0447");

    // Time tracking: the nested corpus measures, base (step 0) vs tuned (step 20).
    let time = table(&doc, "time-measures");
    let knn = time
        .iter()
        .find(|r| r[0] == "corpus.knn_year_error")
        .unwrap();
    assert_eq!(knn[1..4], ["30.0000", "20.0000", "-10.0000"]);
    assert!(time.iter().all(|r| r[0] != "mrr@10"));

    // Embeddings: both maps of the 40 sampled chunks, coordinates in Parquet.
    assert_eq!(value(&doc, "map-sample"), MAP_SAMPLE.to_string());
    let mut sampled: Vec<&ChunkRow> = corpus.iter().collect();
    sampled.sort_by_key(|c| sample_key(42, &c.doc_id, c.chunk_idx));
    let want: BTreeMap<(String, i32), i32> = sampled[..MAP_SAMPLE]
        .iter()
        .map(|c| ((c.doc_id.clone(), c.chunk_idx), c.year))
        .collect();
    for file in ["map-base.parquet", "map-tuned.parquet"] {
        let got = read_map(&out.join(file));
        assert_eq!(got.len(), MAP_SAMPLE, "{file}");
        let keys: BTreeMap<(String, i32), i32> =
            got.iter().map(|r| ((r.0.clone(), r.1), r.2)).collect();
        assert_eq!(keys, want, "{file}");
    }
    let map_svg = std::fs::read_to_string(out.join("embeddings-map.svg")).unwrap();
    let map_doc = roxmltree::Document::parse(&map_svg).unwrap();
    let dots = map_doc
        .descendants()
        .filter(|n| n.has_tag_name("circle") && n.attribute("r") == Some("2"))
        .count();
    assert_eq!(dots, 2 * MAP_SAMPLE);
    // The shards hold base-model embeddings, so both maps agree (up to batch-order rounding).
    let (base, tuned) = (
        read_map(&out.join("map-base.parquet")),
        read_map(&out.join("map-tuned.parquet")),
    );
    for (b, t) in base.iter().zip(&tuned) {
        assert_eq!(b.0, t.0);
        assert!(
            (b.3 - t.3).abs() < 1e-3 && (b.4 - t.4).abs() < 1e-3,
            "{b:?} vs {t:?}"
        );
    }

    // Precocity: the shown setting, the top document and its most precocious (last) chunk.
    let defined: Vec<&(String, i32, Option<f64>)> =
        precocity.iter().filter(|p| p.2.is_some()).collect();
    assert_eq!(
        value(&doc, "precocity-documents"),
        defined.len().to_string()
    );
    let top = defined
        .iter()
        .max_by(|a, b| a.2.unwrap().total_cmp(&b.2.unwrap()))
        .unwrap();
    let last_chunk = corpus.iter().rfind(|c| c.doc_id == top.0).unwrap();
    let rows = table(&doc, "precocity-top");
    assert_eq!(rows.len(), 20);
    assert_eq!(rows[0][1], top.0);
    assert_eq!(rows[0][2], top.1.to_string());
    assert_eq!(rows[0][3], format!("{:.4}", top.2.unwrap()));
    let opening: Vec<&str> = last_chunk.text.split_whitespace().take(30).collect();
    assert!(
        rows[0][6].starts_with(&format!(
            "[chunk {}] {}",
            last_chunk.chunk_idx,
            opening.join(" ")
        )),
        "{}",
        rows[0][6]
    );
    let per_decade: u64 = table(&doc, "precocity-per-decade")
        .iter()
        .map(|r| r[1].parse::<u64>().unwrap())
        .sum();
    assert_eq!(per_decade, defined.len() as u64);

    // MANIFEST lists every file written.
    let manifest = common::manifest::Manifest::load(&out).unwrap();
    let mut listed: Vec<&String> = manifest.files.keys().collect();
    listed.sort();
    let mut files: Vec<&String> = report.files.iter().collect();
    files.sort();
    assert_eq!(listed, files);
    assert!(common::manifest::verify(&out).unwrap().is_empty());

    // Deterministic: a second run gives the same bytes.
    let out2 = tmp.path().join("again");
    run(&options(&run_dir, &out2)).unwrap();
    for f in &report.files {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(out2.join(f)).unwrap(),
            "{f} differs between two runs"
        );
    }
}

fn read_map(path: &Path) -> Vec<(String, i32, i32, f32, f32)> {
    use arrow::array::{Array, Float32Array};
    let file = std::fs::File::open(path).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024).unwrap();
    let mut rows = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let s = |i: usize| {
            b.column(i)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone()
        };
        let n = |i: usize| {
            b.column(i)
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap()
                .clone()
        };
        let f = |i: usize| {
            b.column(i)
                .as_any()
                .downcast_ref::<Float32Array>()
                .unwrap()
                .clone()
        };
        let (d, c, y, x, yy) = (s(0), n(1), n(2), f(3), f(4));
        for i in 0..b.num_rows() {
            assert!(!x.is_null(i));
            rows.push((
                d.value(i).to_string(),
                c.value(i),
                y.value(i),
                x.value(i),
                yy.value(i),
            ));
        }
    }
    rows
}

#[test]
fn missing_inputs_drop_their_sections_with_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    write_pairs(&run_dir, &chunks());
    let out = tmp.path().join("report");
    // No corpus, no base model, no model, embeddings or precocity: only the pairs section.
    let report = run(&Options::new(&run_dir, &out)).unwrap();
    let html = std::fs::read_to_string(&report.index).unwrap();
    let doc = parse(&html);
    assert_eq!(section_note(&doc, "pairs"), None);
    let notes: BTreeMap<&str, String> = ["corpus", "training", "embeddings", "time", "precocity"]
        .into_iter()
        .map(|id| (id, section_note(&doc, id).expect(id)))
        .collect();
    assert!(notes["corpus"].contains("--corpus"), "{}", notes["corpus"]);
    assert!(notes["training"].contains("model/metrics.jsonl"));
    assert!(notes["embeddings"].contains("embeddings/"));
    assert!(notes["precocity"].contains("precocity/documents.parquet"));
    // Nav lists the missing sections as not shown.
    let missing = by_class(&doc, "missing").len();
    assert_eq!(missing, 5);
    assert_eq!(report.files, ["index.html", "pairs-per-year.svg"]);
    assert!(!out.join("map-base.parquet").exists());

    // A second run replaces the folder whole: files of the first that are no longer written
    // go (here: the pairs figure, once the pairs are gone).
    std::fs::remove_dir_all(run_dir.join("pairs")).unwrap();
    let report = run(&Options::new(&run_dir, &out)).unwrap();
    assert_eq!(report.files, ["index.html"]);
    assert!(!out.join("pairs-per-year.svg").exists());
}

/// The precocity stage records the setting it ranks its own top documents by (`top_by` in its
/// manifest); the report ranks by that one, not by the setting with the most values.
#[test]
fn the_top_table_ranks_by_the_setting_the_precocity_stage_ranked_by() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let corpus = chunks();
    write_pairs(&run_dir, &corpus);
    write_precocity(&run_dir, &corpus);
    let dir = run_dir.join("precocity");
    let top_by = serde_json::json!({ "top_by": {
        "fraction_compared": 0.05, "filtered": "no filter", "time_radius": 10, "chunks_used": 1.0
    }});
    common::manifest::record(
        &dir,
        &dir.join("documents.parquet"),
        None,
        &Provenance::new("precocity", "0", top_by),
    )
    .unwrap();
    let out = tmp.path().join("report");
    run(&Options::new(&run_dir, &out)).unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let doc = parse(&html);
    // Setting B: the first ten documents, each at 9.
    let rows = table(&doc, "precocity-top");
    assert_eq!(rows.len(), 10);
    assert!(rows.iter().all(|r| r[3] == "9.0000"), "{rows:?}");
    assert_eq!(value(&doc, "precocity-documents"), "10");
}

#[test]
fn bad_input_is_reported_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let err = run(&Options::new(
        tmp.path().join("nope"),
        tmp.path().join("out"),
    ))
    .unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    let mut o = Options::new(tmp.path(), tmp.path().join("out"));
    o.corpus = Some(tmp.path().join("missing.parquet"));
    let err = run(&o).unwrap_err();
    assert!(
        err.is_bad_input() && err.to_string().contains("missing.parquet"),
        "{err}"
    );
    // A metrics log that is not JSON names the file and line.
    std::fs::create_dir_all(tmp.path().join("model")).unwrap();
    std::fs::write(
        tmp.path().join("model/metrics.jsonl"),
        "{\"kind\":\"train\"}\nnot json\n",
    )
    .unwrap();
    let err = run(&Options::new(tmp.path(), tmp.path().join("out"))).unwrap_err();
    assert!(err.to_string().contains("metrics.jsonl: line 2"), "{err}");
    assert!(!tmp.path().join("out").exists(), "no output after an error");
}

/// Debian's chromium, as scripts/test.sh installs it (or $CHROMIUM).
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return p.into();
    }
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("no chromium: scripts/test.sh installs Debian's (apt-get install chromium), or set CHROMIUM");
}

#[test]
fn page_renders_in_headless_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let corpus = chunks();
    write_pairs(&run_dir, &corpus);
    write_model(&run_dir);
    write_embeddings(&run_dir, &corpus, 42);
    write_precocity(&run_dir, &corpus);
    let out = tmp.path().join("report");
    let report = run(&options(&run_dir, &out)).unwrap();
    let png_path = tmp.path().join("page.png");
    let (w, h) = (1200u32, 9000u32);
    let status = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            &format!("--user-data-dir={}", tmp.path().join("profile").display()),
            &format!("--window-size={w},{h}"),
            &format!("--screenshot={}", png_path.display()),
        ])
        .arg(format!(
            "file://{}",
            report.index.canonicalize().unwrap().display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "chromium failed: {status}");
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (w, h));
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let pixels = buf[..info.buffer_size()].chunks(channels);
    let (mut ink, mut colour, mut total) = (0u64, 0u64, 0u64);
    for p in pixels {
        total += 1;
        let (lo, hi) = (p[0].min(p[1]).min(p[2]), p[0].max(p[1]).max(p[2]));
        if hi < 200 {
            ink += 1;
        }
        if hi - lo > 60 {
            colour += 1;
        }
    }
    // Text and grey bars: a few percent of the page is dark. The map's viridis dots and
    // colour bar: thousands of coloured pixels. A blank or unstyled page has neither.
    let ink_share = ink as f64 / total as f64;
    assert!(
        ink_share > 0.01,
        "only {:.4} of the page is dark",
        ink_share
    );
    assert!(
        colour > 2000,
        "only {colour} coloured pixels: the map did not render"
    );
}

/// The pipeline passes the run's corpus as it is: the chunk-file layout (a folder) reads to the
/// same counts, sample and texts as its Parquet import.
#[test]
fn a_chunk_file_corpus_reads_like_its_parquet_import() {
    let root = common::testing::workspace_root().join("data/sample");
    let opts = report::Options::new("unused", "unused");
    let wanted: HashSet<(String, i32)> = [("sotu-1924-coolidge-1".to_string(), 3)].into();
    let parquet = report::corpus::scan(&root.join("chunks.parquet"), None, &wanted, &opts).unwrap();
    let folder = report::corpus::scan(&root, None, &wanted, &opts).unwrap();
    assert_eq!((folder.chunks, folder.documents), (3428, 249));
    assert_eq!(
        (folder.chunks, folder.documents),
        (parquet.chunks, parquet.documents)
    );
    assert_eq!(folder.per_year, parquet.per_year);
    let keys = |s: &report::corpus::CorpusScan| -> Vec<(String, i32)> {
        s.sample
            .iter()
            .map(|c| (c.doc_id.clone(), c.chunk_idx))
            .collect()
    };
    assert_eq!(keys(&folder), keys(&parquet));
    assert_eq!(folder.texts.len(), 1);
    assert_eq!(folder.texts, parquet.texts);
}
