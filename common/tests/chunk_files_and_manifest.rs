//! Chunk-file layout import (metadata TSV + `{id}.txt` chunk files) and output manifests.

use std::path::Path;

use common::chunk_files::{import_chunk_files, read_chunk_files, ChunkFileLayout};
use common::manifest::{self, Finding};
use common::provenance::Provenance;
use common::tables::ChunksReader;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn imports_the_bundled_sample_like_the_committed_parquet() {
    let root = common::testing::workspace_root();
    let layout = ChunkFileLayout::in_dir(&root.join("data/sample"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("chunks.parquet");
    let report = import_chunk_files(&layout, &out, "import-chunk-files").unwrap();
    assert!(
        report.malformed.is_empty() && report.missing_chunk_files.is_empty(),
        "{report:?}"
    );
    assert!(report.documents >= 200, "{report:?}");
    // Recorded like every stage's output: rows, sha256 and where it came from.
    let m = manifest::Manifest::load(dir.path()).unwrap();
    let entry = &m.files["chunks.parquet"];
    assert_eq!(
        (entry.rows, entry.stage.as_str()),
        (Some(report.chunks), "import-chunk-files")
    );
    assert!(manifest::verify(dir.path()).unwrap().is_empty());
    let imported = ChunksReader::read_all(&out).unwrap();
    let committed = ChunksReader::read_all(&root.join("data/sample/chunks.parquet")).unwrap();
    assert_eq!(
        imported, committed,
        "data/sample/chunks.parquet is stale: rerun scripts/make-sample-data.sh"
    );
}

#[test]
fn reports_missing_files_and_malformed_lines_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        &d.join("metadata.tsv"),
        "paperId\ttitle\tyear\n\
        a\tA\t1901\n\
        b\tB\t19o2\n\
        c\tC\t1903\n\
        short\n\
        e\tE\t1905\n",
    );
    write(
        &d.join("chunks/a.txt"),
        "1\tsecond chunk\n0\tfirst chunk\nno tab here\nx\tbad index\n2\t  \n\n",
    );
    write(
        &d.join("chunks/b.txt"),
        "0\tyear is bad so this doc is skipped\n",
    );
    write(&d.join("chunks/e.txt"), "\n");
    // c.txt is missing.
    let layout = ChunkFileLayout::in_dir(d);
    let mut docs = Vec::new();
    let report = read_chunk_files::<common::Error>(&layout, |chunks| {
        docs.push(chunks);
        Ok(())
    })
    .unwrap();
    assert_eq!(docs.len(), 1);
    let a = &docs[0];
    assert_eq!(
        a.iter()
            .map(|c| (c.chunk_idx, c.text.as_str(), c.year))
            .collect::<Vec<_>>(),
        vec![(0, "first chunk", 1901), (1, "second chunk", 1901)]
    );
    assert_eq!(report.missing_chunk_files, vec!["c"]);
    assert_eq!(report.empty_documents, vec!["e"]);
    let lines: Vec<String> = report.malformed.iter().map(|p| p.to_string()).collect();
    let meta = d.join("metadata.tsv").display().to_string();
    let chunks_a = d.join("chunks/a.txt").display().to_string();
    for expected in [
        format!("{meta}:3: year \"19o2\" is not an integer"),
        format!("{meta}:5: 1 fields, the header has 3"),
        format!("{chunks_a}:3: no TAB between chunk index and text"),
        format!("{chunks_a}:4: chunk index \"x\" is not an integer"),
        format!("{chunks_a}:5: chunk 2 has empty text"),
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected:?} in {lines:#?}"
        );
    }
    // Duplicates are errors, not skipped lines: see tests/field_inputs.rs.
    assert_eq!(lines.len(), 5, "{lines:#?}");
}

#[test]
fn unusable_layouts_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("metadata.tsv"), "id\tyear\na\t1900\n");
    let e = read_chunk_files::<common::Error>(&ChunkFileLayout::in_dir(d), |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("metadata.tsv:1") && e.contains("no column `paperId`"),
        "{e}"
    );

    let mut layout = ChunkFileLayout::in_dir(d);
    layout.id_column = "id".into();
    let e = read_chunk_files::<common::Error>(&layout, |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no chunk could be read"), "{e}");

    write(&d.join("metadata.tsv"), "");
    let e = read_chunk_files::<common::Error>(&layout, |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty metadata file"), "{e}");

    let out = d.join("out.parquet");
    assert!(import_chunk_files(&layout, &out, "t").is_err());
    assert!(
        !out.exists(),
        "a failed import must not leave an output file"
    );
}

#[test]
fn manifest_records_and_verifies_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prov = Provenance::new("apply-model", "0.1.0", serde_json::json!({"shard": 0}));
    write(&d.join("a.bin"), "aaaa");
    write(&d.join("sub/b.bin"), "bbbb");
    manifest::record(d, &d.join("a.bin"), None, &prov).unwrap();
    manifest::record(d, &d.join("sub/b.bin"), Some(4), &prov).unwrap();
    let m = manifest::Manifest::load(d).unwrap();
    assert_eq!(
        m.files.keys().collect::<Vec<_>>(),
        vec!["a.bin", "sub/b.bin"]
    );
    assert_eq!(m.files["sub/b.bin"].rows, Some(4));
    assert!(manifest::verify(d).unwrap().is_empty());

    write(&d.join("a.bin"), "aaab");
    write(&d.join("sub/b.bin"), "bb");
    assert_eq!(
        manifest::verify(d).unwrap(),
        vec![
            Finding::ContentChanged {
                path: "a.bin".into()
            },
            Finding::SizeChanged {
                path: "sub/b.bin".into(),
                expected: 4,
                found: 2
            },
        ]
    );
    std::fs::remove_file(d.join("a.bin")).unwrap();
    assert_eq!(
        manifest::verify(d).unwrap()[0],
        Finding::Missing {
            path: "a.bin".into()
        }
    );
    assert!(manifest::record(d, Path::new("/etc/hostname"), None, &prov).is_err());
}

#[test]
fn concurrent_manifest_updates_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let prov = Provenance::new("apply-model", "0.1.0", serde_json::Value::Null);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (d, prov) = (d.clone(), prov.clone());
            std::thread::spawn(move || {
                let f = d.join(format!("shard-{i}.parquet"));
                std::fs::write(&f, format!("{i}")).unwrap();
                manifest::record(&d, &f, Some(i), &prov).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(manifest::Manifest::load(&d).unwrap().files.len(), 8);
}
