//! Files as people's tools write them (issue 17): a byte-order mark before the header,
//! dictionary-encoded strings (pandas `category`, polars `Categorical`), duplicate keys and
//! empty texts, each through the same readers the stages use.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, DictionaryArray, Int32Array, Int64Array, StringArray};
use arrow::datatypes::{Int16Type, Int32Type, Int8Type, UInt16Type};
use common::chunk_files::{read_chunk_files, ChunkFileLayout};
use common::corpus::{Corpus, EmptyTexts};
use common::schema::Category;
use common::tables::{ChunkRow, ChunksReader, PairsReader};
use common::testing::{write_chunks, write_table};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn chunk(doc: &str, year: i32, idx: i32, text: &str) -> ChunkRow {
    ChunkRow {
        doc_id: doc.into(),
        year,
        chunk_idx: idx,
        text: text.into(),
    }
}

fn read_corpus(corpus: &Corpus) -> common::Result<Vec<ChunkRow>> {
    let mut all = Vec::new();
    corpus.for_each_batch(3, |rows| {
        all.extend(rows);
        Ok(())
    })?;
    Ok(all)
}

/// Excel and Notepad save UTF-8 with a byte-order mark; the header's first column must
/// still be `paperId`, and a chunk file's first index still an integer.
#[test]
fn chunk_file_layout_with_byte_order_marks_reads_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        &d.join("metadata.tsv"),
        "\u{feff}paperId\tyear\ttitle\r\na\t1901\tA\r\nb\t1902\tB\r\n",
    );
    write(
        &d.join("chunks/a.txt"),
        "\u{feff}0\tfirst of a\n1\tsecond of a\n",
    );
    write(&d.join("chunks/b.txt"), "\u{feff}0\tonly one of b\n");
    let mut docs = Vec::new();
    let report = read_chunk_files::<common::Error>(&ChunkFileLayout::in_dir(d), |c| {
        docs.extend(c);
        Ok(())
    })
    .unwrap();
    assert!(report.malformed.is_empty(), "{:?}", report.malformed);
    assert_eq!(
        docs,
        vec![
            chunk("a", 1901, 0, "first of a"),
            chunk("a", 1901, 1, "second of a"),
            chunk("b", 1902, 0, "only one of b"),
        ]
    );
}

/// pandas `category` columns are Arrow dictionaries with int8 (or wider) indices; polars
/// writes large-string values. Every string column takes any of them, in every table.
#[test]
fn dictionary_encoded_strings_are_read_in_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = dir.path().join("chunks.parquet");
    let doc_id: DictionaryArray<Int8Type> = vec!["a", "a", "b"].into_iter().collect();
    let text: DictionaryArray<UInt16Type> = DictionaryArray::new(
        arrow::array::UInt16Array::from(vec![0, 1, 0]),
        Arc::new(arrow::array::LargeStringArray::from(vec!["x", "y"])),
    );
    write_table(
        &chunks,
        vec![
            ("doc_id", Arc::new(doc_id) as ArrayRef),
            (
                "year",
                Arc::new(Int64Array::from(vec![1900i64, 1900, 1901])),
            ),
            ("chunk_idx", Arc::new(Int32Array::from(vec![0, 1, 0]))),
            ("text", Arc::new(text)),
        ],
    );
    assert_eq!(
        ChunksReader::read_all(&chunks).unwrap(),
        vec![
            chunk("a", 1900, 0, "x"),
            chunk("a", 1900, 1, "y"),
            chunk("b", 1901, 0, "x")
        ]
    );
    assert_eq!(read_corpus(&Corpus::Chunks(chunks)).unwrap().len(), 3);

    let pairs = dir.path().join("pairs.parquet");
    let s = |v: &[&str]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
    let category: DictionaryArray<Int16Type> =
        vec!["successive", "random-pair"].into_iter().collect();
    let side: DictionaryArray<Int32Type> = vec![None, Some("anchor")].into_iter().collect();
    write_table(
        &pairs,
        vec![
            ("pair_id", s(&["p0", "p1"])),
            ("doc_id", s(&["a", "b"])),
            ("year", Arc::new(Int32Array::from(vec![1900, 1901]))),
            ("anchor", s(&["x", "y"])),
            ("positive", s(&["y", "z"])),
            ("category", Arc::new(category)),
            ("paraphrase_side", Arc::new(side)),
        ],
    );
    let rows = PairsReader::read_all(&pairs).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.category).collect::<Vec<_>>(),
        vec![Category::Successive, Category::RandomPair]
    );
    assert_eq!(rows[1].paraphrase_side, Some(common::schema::Side::Anchor));
}

/// The same chunks file appended to itself: every key twice. The read stops at the first
/// repeat, naming the file, its row and the first copy's row.
#[test]
fn duplicate_keys_in_parquet_stop_the_read_with_both_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doubled.parquet");
    let once = [
        chunk("a", 1900, 0, "x"),
        chunk("a", 1900, 1, "y"),
        chunk("b", 1901, 0, "z"),
    ];
    let twice: Vec<ChunkRow> = once.iter().chain(once.iter()).cloned().collect();
    write_chunks(&path, &twice);
    let e = read_corpus(&Corpus::Chunks(path.clone())).unwrap_err();
    let msg = e.to_string();
    assert!(e.is_bad_input(), "{msg}");
    assert!(
        msg.contains("doubled.parquet")
            && msg.contains("row 3")
            && msg.contains("duplicate chunk (doc_id \"a\", chunk_idx 0)")
            && msg.contains("first at row 0"),
        "{msg}"
    );
    // Same texts or not, a repeated key is the same error; distinct keys still pass.
    write_chunks(&path, &once);
    assert_eq!(read_corpus(&Corpus::Chunks(path)).unwrap(), once.to_vec());
}

/// The chunk-file layout follows the same rule: a document listed twice in the metadata or a chunk
/// index twice in a chunk file stops the read with both lines.
#[test]
fn duplicate_keys_in_a_chunk_file_layout_stop_the_read_with_both_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("metadata.tsv"), "paperId\tyear\na\t1901\nb\t1902\n");
    write(&d.join("chunks/a.txt"), "0\tx\n1\ty\n0\tx again\n");
    write(&d.join("chunks/b.txt"), "0\tz\n");
    let msg = read_corpus(&Corpus::ChunkFiles(ChunkFileLayout::in_dir(d)))
        .unwrap_err()
        .to_string();
    let a = d.join("chunks/a.txt").display().to_string();
    assert!(
        msg.contains(&format!("{a}:3: duplicate chunk index 0 (first at line 1)")),
        "{msg}"
    );

    write(&d.join("chunks/a.txt"), "0\tx\n1\ty\n");
    write(
        &d.join("metadata.tsv"),
        "paperId\tyear\na\t1901\nb\t1902\na\t1901\n",
    );
    let msg = read_corpus(&Corpus::ChunkFiles(ChunkFileLayout::in_dir(d)))
        .unwrap_err()
        .to_string();
    let meta = d.join("metadata.tsv").display().to_string();
    assert!(
        msg.contains(&format!(
            "{meta}:4: duplicate document id \"a\" (first at line 2)"
        )),
        "{msg}"
    );
}

/// Empty and whitespace-only texts: stop (naming the option), skip and count, or pass on.
#[test]
fn empty_texts_follow_the_chosen_rule_in_parquet_and_chunk_file_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chunks.parquet");
    let rows = [
        chunk("a", 1900, 0, "x"),
        chunk("a", 1900, 1, ""),
        chunk("b", 1901, 0, " \t "),
        chunk("b", 1901, 1, "z"),
    ];
    write_chunks(&path, &rows);
    let layout = dir.path().join("chunk_files");
    write(
        &layout.join("metadata.tsv"),
        "paperId\tyear\na\t1900\nb\t1901\n",
    );
    write(&layout.join("chunks/a.txt"), "0\tx\n1\t\n");
    write(&layout.join("chunks/b.txt"), "0\t \t \n1\tz\n");
    for corpus in [
        Corpus::Chunks(path),
        Corpus::ChunkFiles(ChunkFileLayout::in_dir(&layout)),
    ] {
        let read = |rule: EmptyTexts| -> common::Result<(Vec<ChunkRow>, u64)> {
            let mut all = Vec::new();
            let report = corpus.for_each_batch_with(2, rule, |r| {
                all.extend(r);
                Ok(())
            })?;
            Ok((all, report.empty_texts))
        };
        let msg = read(EmptyTexts::Stop).unwrap_err().to_string();
        assert!(
            (msg.contains("chunks.parquet: row 1") || msg.contains("a.txt:2"))
                && msg.contains("--empty-texts embed"),
            "{msg}"
        );
        let (kept, n) = read(EmptyTexts::Skip).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            kept.iter()
                .map(|r| (r.doc_id.as_str(), r.chunk_idx))
                .collect::<Vec<_>>(),
            vec![("a", 0), ("b", 1)]
        );
        let (kept, n) = read(EmptyTexts::Embed).unwrap();
        assert_eq!(n, 2);
        assert_eq!(kept.len(), 4);
        assert!(kept[1].text.trim().is_empty() && kept[2].text.trim().is_empty());
    }
}
