//! apply-model on inputs as people's tools write them (issue 17), through the binary: empty
//! texts (embedded exactly as sentence-transformers does, per the reference file), a chunks
//! file appended to itself, pandas `category` doc ids, and doc ids that hold the TSV export's
//! delimiters.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{ArrayRef, DictionaryArray, Int32Array, StringArray};
use arrow::datatypes::Int8Type;
use common::tables::{ChunkKey, ChunkRow, ChunksReader, EmbeddingsReader};
use common::testing::{base_model, workspace_root as root, write_chunks, write_table};
use encoder::cosine;

fn chunk(doc: &str, idx: i32, text: &str) -> ChunkRow {
    ChunkRow {
        doc_id: doc.into(),
        year: 1900,
        chunk_idx: idx,
        text: text.into(),
    }
}

fn apply(chunks: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_apply-model"))
        .arg("--model")
        .arg(base_model())
        .arg("--chunks")
        .arg(chunks)
        .arg("--out")
        .arg(out)
        .args(["--shard-by", "equal:1"])
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn shard(out: &Path) -> PathBuf {
    out.join("part-00000-of-00001.parquet")
}

fn read_all(path: &Path) -> (Vec<ChunkKey>, Vec<f32>) {
    EmbeddingsReader::read_all(path).unwrap()
}

/// The reference file's embedding of the item with this exact text.
fn reference_embedding(text: &str) -> Vec<f32> {
    let path = root().join("encoder/tests/data/all-MiniLM-L6-v2.embeddings.json");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let item = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|it| it["text"] == text)
        .unwrap_or_else(|| panic!("no reference item {text:?}"));
    serde_json::from_value(item["embedding"].clone()).unwrap()
}

#[test]
fn empty_texts_stop_by_default_and_are_skipped_or_embedded_as_sentence_transformers_does() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = dir.path().join("chunks.parquet");
    // The reference file's "edge_empty" and "edge_whitespace" items, between two real texts.
    let rows = [
        chunk("a", 0, "hello world"),
        chunk("a", 1, ""),
        chunk("b", 0, "   \t  "),
        chunk("b", 1, "A man is eating food."),
    ];
    write_chunks(&chunks, &rows);

    let out = dir.path().join("stop");
    let o = apply(&chunks, &out, &[]);
    let msg = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{msg}");
    assert!(
        msg.contains("chunks.parquet: row 1") && msg.contains("--empty-texts embed"),
        "{msg}"
    );
    assert!(!shard(&out).exists());

    let out = dir.path().join("skip");
    let o = apply(&chunks, &out, &["--empty-texts", "skip"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("2 chunks with an empty text skipped"));
    let (keys, _) = read_all(&shard(&out));
    let kept: Vec<(&str, i32)> = keys
        .iter()
        .map(|k| (k.doc_id.as_str(), k.chunk_idx))
        .collect();
    assert_eq!(kept, vec![("a", 0), ("b", 1)]);

    let out = dir.path().join("embed");
    let o = apply(&chunks, &out, &["--empty-texts", "embed"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (keys, matrix) = read_all(&shard(&out));
    assert_eq!(keys.len(), 4);
    for (i, r) in rows.iter().enumerate() {
        let got = &matrix[i * 384..(i + 1) * 384];
        let want = reference_embedding(&r.text);
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            cosine(got, &want) >= 0.9999 && diff <= 1e-4,
            "{:?}: max abs diff {diff} from sentence-transformers",
            r.text
        );
    }
}

#[test]
fn a_chunks_file_appended_to_itself_stops_before_embedding() {
    let dir = tempfile::tempdir().unwrap();
    let all = ChunksReader::read_all(&root().join("data/sample/chunks.parquet")).unwrap();
    let once: Vec<ChunkRow> = all.into_iter().step_by(300).take(8).collect();
    let twice: Vec<ChunkRow> = once.iter().chain(&once).cloned().collect();
    let chunks = dir.path().join("doubled.parquet");
    write_chunks(&chunks, &twice);
    let out = dir.path().join("out");
    let o = apply(&chunks, &out, &[]);
    let msg = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{msg}");
    let expected = format!(
        "doubled.parquet: row 8: column `chunk_idx`: duplicate chunk (doc_id {:?}, chunk_idx {}), first at row 0",
        once[0].doc_id, once[0].chunk_idx
    );
    assert!(msg.contains(&expected), "{msg}");
    assert!(!shard(&out).exists());
    assert!(
        !out.join("part-00000-of-00001.parts").exists(),
        "nothing embedded"
    );
}

#[test]
fn pandas_category_doc_ids_are_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = dir.path().join("category.parquet");
    // pandas writes a `category` column as dictionary<int8, utf8>.
    let doc_id: DictionaryArray<Int8Type> = vec!["a", "a", "b"].into_iter().collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("doc_id", Arc::new(doc_id)),
        ("year", Arc::new(Int32Array::from(vec![1900, 1900, 1901]))),
        ("chunk_idx", Arc::new(Int32Array::from(vec![0, 1, 0]))),
        (
            "text",
            Arc::new(StringArray::from(vec!["hello world", "x y", "z"])),
        ),
    ];
    write_table(&chunks, columns);

    let out = dir.path().join("out");
    let o = apply(&chunks, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (keys, matrix) = read_all(&shard(&out));
    assert_eq!(
        keys.iter()
            .map(|k| (k.doc_id.as_str(), k.chunk_idx, k.year))
            .collect::<Vec<_>>(),
        vec![("a", 0, 1900), ("a", 1, 1900), ("b", 0, 1901)]
    );
    let hello = reference_embedding("hello world");
    assert!(cosine(&matrix[..384], &hello) >= 0.9999);
}

/// Doc ids holding the export's delimiters: the TSV must read back to the same rows, with
/// the csv crate and with Python's csv module (what pandas' reader follows).
#[test]
fn tsv_export_reads_back_to_the_same_rows_whatever_the_doc_ids_hold() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = dir.path().join("chunks.parquet");
    let ids = [
        "plain",
        "tab\there",
        "two\nlines",
        "carriage\rreturn",
        "\"quoted\" id",
        "comma, fine",
    ];
    let rows: Vec<ChunkRow> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| chunk(id, 0, &format!("passage number {i}")))
        .collect();
    write_chunks(&chunks, &rows);
    let out = dir.path().join("out");
    let o = apply(&chunks, &out, &["--format", "tsv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (keys, matrix) = read_all(&shard(&out));
    let tsv = out.join("part-00000-of-00001.tsv");

    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .from_path(&tsv)
        .unwrap();
    assert_eq!(reader.headers().unwrap().len(), 386);
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), ids.len());
    for (i, rec) in records.iter().enumerate() {
        assert_eq!(rec.len(), 386, "record {i}");
        assert_eq!(&rec[0], keys[i].doc_id.as_str());
        assert_eq!(rec[1].parse::<i32>().unwrap(), keys[i].chunk_idx);
        let values: Vec<f32> = rec.iter().skip(2).map(|v| v.parse().unwrap()).collect();
        assert_eq!(values, matrix[i * 384..(i + 1) * 384].to_vec());
    }

    let script = "import csv, json, sys\n\
                  with open(sys.argv[1], newline='') as f:\n    \
                      rows = list(csv.reader(f, delimiter='\\t'))\n\
                  assert all(len(r) == 386 for r in rows), [len(r) for r in rows]\n\
                  print(json.dumps([r[0] for r in rows[1:]]))";
    let py = Command::new("python3")
        .args(["-c", script])
        .arg(&tsv)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let read_back: Vec<String> = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(read_back, ids.to_vec());
}
