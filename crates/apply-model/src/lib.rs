//! Embeds a corpus with a sentence-transformers model folder and writes an `embeddings` table.
//!
//! The corpus is streamed in windows of `window` chunks; each window is tokenized in
//! parallel, sorted by length into batches that carry little padding, embedded, and written
//! back in input order, so memory stays bounded however large the corpus is.

use std::path::PathBuf;
use std::time::Instant;

use common::corpus::Corpus;
use common::model::{parse_device, SentenceEncoder};
use common::provenance::{sha256_file, Provenance};
use common::tables::{ChunkKey, EmbeddingsWriter};
use serde::Serialize;

pub const OUTPUT_FILE: &str = "embeddings.parquet";

#[derive(Debug, Clone)]
pub struct Options {
    pub model: PathBuf,
    pub corpus: Corpus,
    pub out_dir: PathBuf,
    pub batch_size: usize,
    pub window: usize,
    pub device: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub output: PathBuf,
    pub rows: u64,
    pub dim: usize,
    pub normalized: bool,
    pub seconds: f64,
    pub texts_per_second: f64,
    pub model_sha256: String,
}

pub fn run(opts: &Options) -> common::Result<Report> {
    let device = parse_device(&opts.device)?;
    let encoder = SentenceEncoder::load(&opts.model, &device)?;
    let model_sha256 = sha256_file(&encoder.folder.weights_path())?;
    let params = serde_json::json!({
        "model": opts.model.display().to_string(),
        "model_sha256": model_sha256,
        "batch_size": opts.batch_size,
        "window": opts.window,
        "max_seq_length": encoder.tokenizer.max_seq_length(),
        "normalized": encoder.normalizes(),
    });
    let provenance = opts.corpus.add_to(
        Provenance::new("apply-model", env!("CARGO_PKG_VERSION"), params).with_input_hash(
            encoder.folder.weights_path().display().to_string(),
            &model_sha256,
        ),
    )?;
    let output = opts.out_dir.join(OUTPUT_FILE);
    let mut writer = EmbeddingsWriter::create(&output, encoder.dim(), &provenance)?;
    let bar = common::progress::bar(opts.corpus.known_rows().unwrap_or(0), "chunks");
    let start = Instant::now();
    opts.corpus.for_each_batch(opts.window, |rows| {
        let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
        let matrix = encoder.embed(&texts, opts.batch_size)?;
        let keys: Vec<ChunkKey> = rows
            .into_iter()
            .map(|r| ChunkKey {
                doc_id: r.doc_id,
                chunk_idx: r.chunk_idx,
                year: r.year,
            })
            .collect();
        writer.write(&keys, &matrix)?;
        bar.inc(keys.len() as u64);
        Ok(())
    })?;
    let rows = writer.finish()?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    common::manifest::record(&opts.out_dir, &output, Some(rows), &provenance)?;
    Ok(Report {
        output,
        rows,
        dim: encoder.dim(),
        normalized: encoder.normalizes(),
        seconds,
        texts_per_second: rows as f64 / seconds.max(1e-9),
        model_sha256,
    })
}
