//! For the stages' integration tests: the workspace root, the real base model (fetched once
//! per test binary through the same script users run), and input files written as other tools
//! write them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{Field, Schema};

use crate::provenance::Provenance;
use crate::tables::{ChunkRow, ChunksWriter};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

/// `models/all-MiniLM-L6-v2`, fetched by scripts/fetch-model.sh on first use.
pub fn base_model() -> PathBuf {
    static FETCH: Once = Once::new();
    let root = workspace_root();
    FETCH.call_once(|| {
        let ok = std::process::Command::new("bash")
            .arg(root.join("scripts/fetch-model.sh"))
            .status()
            .expect("run scripts/fetch-model.sh")
            .success();
        assert!(ok, "scripts/fetch-model.sh failed");
    });
    root.join("models/all-MiniLM-L6-v2")
}

/// Writes `rows` as a `chunks` file with our writer (a test provenance).
pub fn write_chunks(path: &Path, rows: &[ChunkRow]) {
    let provenance = Provenance::new("test", "0", serde_json::Value::Null);
    let mut w = ChunksWriter::create(path, &provenance).expect("create chunks file");
    for r in rows {
        w.push(r.clone()).expect("push chunk");
    }
    w.finish().expect("finish chunks file");
}

/// Writes an arbitrary one-batch Parquet table (nullable columns, in the order given), for
/// files our writers would never produce: other types, dictionary encodings, missing columns.
pub fn write_table(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|c| c.1).collect())
        .expect("columns of one length");
    let file = std::fs::File::create(path).expect("create table file");
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("parquet writer");
    w.write(&batch).expect("write batch");
    w.close().expect("close parquet file");
}
