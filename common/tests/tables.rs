//! Parquet tables: round trips, bad input named precisely, atomic writes, and files that
//! Python's data tools open without glue.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, Int64Array, StringArray};
use common::provenance::Provenance;
use common::schema::{Category, Side};
use common::tables::{
    write_pairs, ChunkKey, ChunkRow, ChunksReader, ChunksWriter, EmbeddingsReader,
    EmbeddingsWriter, PairRow, PairsReader, ParaphraseProvenance,
};
use common::testing::write_table;

fn prov() -> Provenance {
    Provenance::new("test", "0.0.0", serde_json::json!({"seed": 42}))
        .with_input_hash("in.parquet", "ab")
}

fn chunk(doc: &str, year: i32, idx: i32, text: &str) -> ChunkRow {
    ChunkRow {
        doc_id: doc.into(),
        year,
        chunk_idx: idx,
        text: text.into(),
    }
}

fn s(values: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

#[test]
fn chunks_round_trip_with_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chunks.parquet");
    let rows: Vec<ChunkRow> = (0..20_000)
        .map(|i| {
            chunk(
                &format!("d{}", i / 10),
                1900 + i / 1000,
                i % 10,
                "text é 中",
            )
        })
        .collect();
    let mut w = ChunksWriter::create(&path, &prov()).unwrap();
    for r in &rows {
        w.push(r.clone()).unwrap();
    }
    assert_eq!(w.finish().unwrap(), 20_000);
    assert_eq!(ChunksReader::read_all(&path).unwrap(), rows);
    let (n, p) = common::parquet_io::footer_info(&path).unwrap();
    assert_eq!(n, 20_000);
    assert_eq!(p.unwrap(), prov());
}

#[test]
fn pairs_round_trip_keeps_nulls_and_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.parquet");
    let rows = vec![
        PairRow {
            pair_id: "d1:0-1".into(),
            doc_id: "d1".into(),
            year: 1850,
            anchor: Some("a".into()),
            positive: Some("b".into()),
            negative: None,
            category: Category::Successive,
            paraphrase_side: None,
            provenance: Default::default(),
        },
        PairRow {
            pair_id: "d2:0".into(),
            doc_id: "d2".into(),
            year: 1851,
            anchor: None,
            positive: Some("c".into()),
            negative: Some("n".into()),
            category: Category::SingleSynthetic,
            paraphrase_side: Some(Side::Anchor),
            provenance: ParaphraseProvenance {
                model: Some("m".into()),
                temperature: Some(0.6),
                seed: Some(7),
                prompt_tokens: Some(12),
                ..Default::default()
            },
        },
    ];
    write_pairs(&path, &rows, &prov()).unwrap();
    assert_eq!(PairsReader::read_all(&path).unwrap(), rows);
}

#[test]
fn embeddings_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("emb.parquet");
    let keys: Vec<ChunkKey> = (0..3)
        .map(|i| ChunkKey {
            doc_id: "d".into(),
            chunk_idx: i,
            year: 2000,
        })
        .collect();
    let matrix: Vec<f32> = (0..12).map(|i| i as f32 / 10.0).collect();
    let mut w = EmbeddingsWriter::create(&path, 4, &prov()).unwrap();
    w.write(&keys, &matrix).unwrap();
    w.finish().unwrap();
    let mut r = EmbeddingsReader::open(&path).unwrap();
    let (k, m) = r.next_rows().unwrap().unwrap();
    assert_eq!((k, m), (keys, matrix));
    assert_eq!(r.dim(), Some(4));
}

#[test]
fn a_dropped_writer_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chunks.parquet");
    let mut w = ChunksWriter::create(&path, &prov()).unwrap();
    w.push(chunk("d", 1, 0, "t")).unwrap();
    drop(w);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no final or temp file may remain"
    );
}

#[test]
fn pandas_style_int64_and_large_strings_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chunks.parquet");
    write_table(
        &path,
        vec![
            (
                "doc_id",
                Arc::new(arrow::array::LargeStringArray::from(vec!["a", "b"])) as ArrayRef,
            ),
            ("year", Arc::new(Int64Array::from(vec![1900i64, 1901]))),
            ("chunk_idx", Arc::new(Int64Array::from(vec![0i64, 0]))),
            ("text", s(&[Some("x"), Some("y")])),
            ("extra", s(&[Some("ignored"), None])),
        ],
    );
    let rows = ChunksReader::read_all(&path).unwrap();
    assert_eq!(
        rows,
        vec![chunk("a", 1900, 0, "x"), chunk("b", 1901, 0, "y")]
    );
}

fn read_err(path: &Path) -> String {
    let e = ChunksReader::read_all(path).unwrap_err();
    assert!(e.is_bad_input(), "{e} should count as bad input");
    e.to_string()
}

#[test]
fn bad_chunks_files_name_file_column_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let ids = || s(&[Some("a"), Some("b"), Some("c")]);
    let ints = || Arc::new(Int32Array::from(vec![1, 2, 3])) as ArrayRef;

    write_table(
        &p("missing.parquet"),
        vec![("doc_id", ids()), ("year", ints()), ("text", ids())],
    );
    let e = read_err(&p("missing.parquet"));
    assert!(
        e.contains("missing.parquet") && e.contains("missing column `chunk_idx`"),
        "{e}"
    );

    write_table(
        &p("type.parquet"),
        vec![
            ("doc_id", ids()),
            ("year", ids()),
            ("chunk_idx", ints()),
            ("text", ids()),
        ],
    );
    let e = read_err(&p("type.parquet"));
    assert!(
        e.contains("type.parquet") && e.contains("`year`") && e.contains("expected int32"),
        "{e}"
    );

    write_table(
        &p("null.parquet"),
        vec![
            ("doc_id", ids()),
            ("year", ints()),
            ("chunk_idx", ints()),
            ("text", s(&[Some("x"), None, Some("z")])),
        ],
    );
    let e = read_err(&p("null.parquet"));
    assert!(
        e.contains("null.parquet")
            && e.contains("row 1")
            && e.contains("`text`")
            && e.contains("null"),
        "{e}"
    );

    write_table(
        &p("blank.parquet"),
        vec![
            ("doc_id", ids()),
            ("year", ints()),
            ("chunk_idx", ints()),
            ("text", s(&[Some("x"), Some("y"), Some("  ")])),
        ],
    );
    let e = read_err(&p("blank.parquet"));
    assert!(e.contains("row 2") && e.contains("empty text"), "{e}");

    write_table(
        &p("big.parquet"),
        vec![
            ("doc_id", ids()),
            ("year", Arc::new(Int64Array::from(vec![1, 1 << 40, 3]))),
            ("chunk_idx", ints()),
            ("text", ids()),
        ],
    );
    let e = read_err(&p("big.parquet"));
    assert!(
        e.contains("row 1") && e.contains("`year`") && e.contains("does not fit"),
        "{e}"
    );

    std::fs::write(p("empty.parquet"), b"").unwrap();
    let e = read_err(&p("empty.parquet"));
    assert!(e.contains("empty.parquet") && e.contains("empty"), "{e}");

    let schema = common::schema::chunks_schema();
    let w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(p("norows.parquet")).unwrap(),
        schema,
        None,
    )
    .unwrap();
    w.close().unwrap();
    let e = read_err(&p("norows.parquet"));
    assert!(e.contains("no rows"), "{e}");

    std::fs::write(p("text.parquet"), b"doc_id,year\na,1\n").unwrap();
    let e = read_err(&p("text.parquet"));
    assert!(
        e.contains("text.parquet") && e.contains("not a readable Parquet file"),
        "{e}"
    );

    let e = ChunksReader::read_all(&p("absent.parquet"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.parquet"), "{e}");
}

#[test]
fn unknown_pair_category_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.parquet");
    let one = |v: &str| s(&[Some(v), Some(v)]);
    write_table(
        &path,
        vec![
            ("pair_id", s(&[Some("p1"), Some("p2")])),
            ("doc_id", one("d")),
            ("year", Arc::new(Int32Array::from(vec![1, 1]))),
            ("anchor", one("a")),
            ("positive", one("b")),
            ("category", s(&[Some("successive"), Some("paraphrase")])),
        ],
    );
    let e = PairsReader::read_all(&path).unwrap_err().to_string();
    assert!(
        e.contains("row 1") && e.contains("`category`") && e.contains("\"paraphrase\""),
        "{e}"
    );
}

/// Our files must open in pyarrow, pandas and polars as they are. The test command installs
/// them; a missing one fails this test rather than skipping it.
#[test]
fn files_open_in_pyarrow_pandas_and_polars() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = dir.path().join("chunks.parquet");
    let mut w = ChunksWriter::create(&chunks, &prov()).unwrap();
    w.push(chunk("d1", 1850, 0, "first")).unwrap();
    w.push(chunk("d1", 1850, 1, "second")).unwrap();
    w.finish().unwrap();
    let emb = dir.path().join("emb.parquet");
    let mut w = EmbeddingsWriter::create(&emb, 3, &prov()).unwrap();
    let keys = vec![ChunkKey {
        doc_id: "d1".into(),
        chunk_idx: 0,
        year: 1850,
    }];
    w.write(&keys, &[0.5, -0.25, 1.0]).unwrap();
    w.finish().unwrap();
    let pairs = dir.path().join("pairs.parquet");
    let row = PairRow {
        pair_id: "p".into(),
        doc_id: "d1".into(),
        year: 1850,
        anchor: Some("a".into()),
        positive: None,
        negative: None,
        category: Category::SingleSynthetic,
        paraphrase_side: Some(Side::Positive),
        provenance: Default::default(),
    };
    write_pairs(&pairs, &[row], &prov()).unwrap();

    let script = r#"
import sys, json
import pyarrow.parquet as pq, pandas as pd, polars as pl, numpy as np
chunks, emb, pairs = sys.argv[1:4]
t = pq.read_table(chunks)
assert str(t.schema.field("year").type) == "int32", t.schema
meta = t.schema.metadata
assert meta[b"strata.stage"] == b"test" and json.loads(meta[b"strata.parameters"]) == {"seed": 42}, meta
df = pd.read_parquet(chunks)
assert list(df.columns) == ["doc_id", "year", "chunk_idx", "text"] and df.text.tolist() == ["first", "second"]
e = pd.read_parquet(emb)
assert np.allclose(np.stack(e.embedding.to_numpy()), [[0.5, -0.25, 1.0]])
assert pl.read_parquet(emb)["embedding"].to_list() == [[0.5, -0.25, 1.0]]
p = pl.read_parquet(pairs)
assert p["positive"].to_list() == [None] and p["paraphrase_side"].to_list() == ["positive"]
assert pl.read_parquet(chunks).height == 2
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .args([&chunks, &emb, &pairs])
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "python check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
