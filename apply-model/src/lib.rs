//! Embeds a corpus with a sentence-transformers model folder, one output file per shard.
//!
//! Each shard is embedded in parts of `part_rows` chunks: a part is tokenized in parallel,
//! sorted by length into batches that carry little padding, embedded, and committed as its
//! own file under `OUT/<shard>.parts/`. A killed run resumes after its last committed part;
//! when all parts are there they are merged, in input order, into `OUT/<shard>.parquet` and
//! recorded in `OUT/MANIFEST.json`. Parts have fixed boundaries, so an interrupted and an
//! uninterrupted run write the same bytes.
//!
//! Before any shard, the whole corpus is read once under the rules of [`common::corpus`]: a
//! repeated (doc_id, chunk_idx) stops the run naming both rows, and empty or whitespace-only
//! texts follow [`Options::empty_texts`] — so a run that would stop, stops before embedding.

pub mod export;
pub mod shards;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::corpus::{is_blank, Corpus, EmptyTexts};
use common::parquet_io::BATCH_ROWS;
use common::provenance::{sha256_file, Provenance};
use common::tables::{ChunkKey, ChunkRow, EmbeddingsReader, EmbeddingsWriter};
use encoder::{parse_device, Precision, SentenceEncoder};
use encoder::{Error, Result};
use serde::Serialize;

pub use export::Format;
pub use shards::{Rows, Shard, ShardBy};

#[derive(Debug, Clone)]
pub struct Options {
    pub model: PathBuf,
    pub corpus: Corpus,
    pub out_dir: PathBuf,
    /// At most this many texts per forward pass…
    pub batch_size: usize,
    /// …and at most this many padded tokens (texts × longest).
    pub max_batch_tokens: usize,
    /// Chunks per committed part (and per length-sorting window).
    pub part_rows: usize,
    pub device: String,
    /// What the model computes in (f32 on CPU; bf16/f16 for GPUs).
    pub precision: Precision,
    pub shard_by: ShardBy,
    /// (task, tasks): embed only every `tasks`-th shard starting at `task`.
    pub task: Option<(usize, usize)>,
    pub exports: Vec<Format>,
    /// Chunks with an empty or whitespace-only text: stop, skip, or embed them as
    /// sentence-transformers does.
    pub empty_texts: EmptyTexts,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardReport {
    pub name: String,
    pub output: PathBuf,
    pub rows: u64,
    /// Already complete from an earlier run.
    pub skipped: bool,
    /// Parts found committed by an interrupted run and not recomputed.
    pub resumed_parts: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub shards: Vec<ShardReport>,
    pub rows_embedded: u64,
    pub dim: usize,
    pub normalized: bool,
    pub seconds: f64,
    pub texts_per_second: f64,
    pub model_sha256: String,
    /// Chunks of the corpus whose text is empty or whitespace-only (embedded or skipped, as
    /// `empty_texts` says; with `stop` the run ends at the first).
    pub empty_texts: u64,
    pub empty_texts_rule: EmptyTexts,
}

pub fn run(opts: &Options) -> Result<Report> {
    if let Some((_, tasks)) = opts.task {
        shards::check_array(tasks, None).map_err(Error::Invalid)?;
    }
    let device = parse_device(&opts.device)?;
    let encoder = SentenceEncoder::load_with_dtype(&opts.model, &device, opts.precision.dtype())?;
    let model_sha256 = sha256_file(&encoder.folder.weights_path())?;
    let base = opts.corpus.add_to(
        Provenance::new(
            "apply-model",
            env!("CARGO_PKG_VERSION"),
            serde_json::Value::Null,
        )
        .with_input_hash(
            encoder.folder.weights_path().display().to_string(),
            &model_sha256,
        ),
    )?;
    let checked = opts
        .corpus
        .for_each_batch_with::<Error>(BATCH_ROWS, opts.empty_texts, |_| Ok(()))?;
    if checked.empty_texts > 0 {
        tracing::warn!(
            "{} chunks have an empty or whitespace-only text; --empty-texts {}",
            checked.empty_texts,
            opts.empty_texts.as_str()
        );
    }
    let all = shards::plan(&opts.corpus, opts.shard_by)?;
    let mine = match opts.task {
        Some((task, tasks)) => shards::for_task(all, task, tasks),
        None => all,
    };
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io(&opts.out_dir, e))?;

    let start = Instant::now();
    let mut report = Report {
        shards: Vec::new(),
        rows_embedded: 0,
        dim: encoder.dim(),
        normalized: encoder.normalizes(),
        seconds: 0.0,
        texts_per_second: 0.0,
        model_sha256: model_sha256.clone(),
        empty_texts: checked.empty_texts,
        empty_texts_rule: opts.empty_texts,
    };
    for shard in &mine {
        let mut provenance = base.clone();
        provenance.parameters = serde_json::json!({
            "model": opts.model.display().to_string(),
            "model_sha256": model_sha256,
            "dim": encoder.dim(),
            "normalized": encoder.normalizes(),
            "precision": opts.precision,
            "max_seq_length": encoder.tokenizer.max_seq_length(),
            "shard": shard.name,
            "shard_by": opts.shard_by,
            "part_rows": opts.part_rows,
            "batch_size": opts.batch_size,
            "max_batch_tokens": opts.max_batch_tokens,
            "empty_texts": opts.empty_texts,
        });
        let r = embed_shard(opts, &encoder, shard, &provenance)?;
        report.rows_embedded += if r.skipped { 0 } else { r.rows };
        report.shards.push(r);
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.texts_per_second = report.rows_embedded as f64 / report.seconds.max(1e-9);
    Ok(report)
}

/// An existing output must come from the same model, input and settings; anything else is an
/// error rather than a silent mix of embeddings.
fn check_same_job(file: &Path, found: Option<&Provenance>, expected: &Provenance) -> Result<()> {
    let Some(found) = found else {
        return Err(Error::Invalid(format!(
            "{}: exists but was not written by apply-model; move it away",
            file.display()
        )));
    };
    if found.parameters["dim"] != expected.parameters["dim"] {
        return Err(Error::Invalid(format!(
            "{}: holds {}-dimensional embeddings but the model gives {}; use another --out",
            file.display(),
            found.parameters["dim"],
            expected.parameters["dim"]
        )));
    }
    if found.parameters != expected.parameters || found.inputs != expected.inputs {
        let differing: Vec<String> = expected
            .parameters
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| found.parameters.get(k.as_str()) != Some(v))
            .map(|(k, _)| k.clone())
            .chain((found.inputs != expected.inputs).then(|| "input files".to_string()))
            .collect();
        return Err(Error::Invalid(format!(
            "{}: was made with another model, input or settings (differs in: {}); remove it or use another --out",
            file.display(),
            differing.join(", ")
        )));
    }
    Ok(())
}

fn part_path(parts_dir: &Path, k: usize) -> PathBuf {
    parts_dir.join(format!("part-{k:05}.parquet"))
}

fn embed_shard(
    opts: &Options,
    encoder: &SentenceEncoder,
    shard: &Shard,
    provenance: &Provenance,
) -> Result<ShardReport> {
    let output = opts.out_dir.join(format!("{}.parquet", shard.name));
    let mut report = ShardReport {
        name: shard.name.clone(),
        output: output.clone(),
        rows: 0,
        skipped: false,
        resumed_parts: 0,
    };
    if output.exists() {
        let (rows, found) = common::parquet_io::footer_info(&output)?;
        check_same_job(&output, found.as_ref(), provenance)?;
        write_exports(opts, &output, provenance, false)?;
        tracing::info!(
            "shard {}: already complete ({rows} rows), skipped",
            shard.name
        );
        report.rows = rows;
        report.skipped = true;
        return Ok(report);
    }

    let parts_dir = opts.out_dir.join(format!("{}.parts", shard.name));
    std::fs::create_dir_all(&parts_dir).map_err(|e| Error::io(&parts_dir, e))?;
    while part_path(&parts_dir, report.resumed_parts).exists() {
        let path = part_path(&parts_dir, report.resumed_parts);
        let (_, found) = common::parquet_io::footer_info(&path)?;
        check_same_job(&path, found.as_ref(), provenance)?;
        report.resumed_parts += 1;
    }
    if report.resumed_parts > 0 {
        tracing::info!(
            "shard {}: resuming after {} committed parts",
            shard.name,
            report.resumed_parts
        );
    }

    let bar = common::progress::bar(0, "chunks");
    bar.set_message(format!("shard {}", shard.name));
    let skip_rows = (report.resumed_parts * opts.part_rows) as u64;
    let mut shard_row = 0u64;
    let mut corpus_row = 0u64;
    let mut pending: Vec<ChunkRow> = Vec::new();
    let mut next_part = report.resumed_parts;
    let flush = |rows: Vec<ChunkRow>, k: usize| -> Result<()> {
        write_part(
            encoder,
            (opts.batch_size, opts.max_batch_tokens),
            &part_path(&parts_dir, k),
            rows,
            provenance,
        )
    };
    // Every row is read (row numbers must match the plan's); the rule was applied up front,
    // so what is left to do here is leaving out the empty texts `skip` asks to.
    opts.corpus
        .for_each_batch_with::<Error>(BATCH_ROWS, EmptyTexts::Embed, |rows| {
            for row in rows {
                let here = corpus_row;
                corpus_row += 1;
                let inside = match shard.rows {
                    Rows::Years { first, last } => (first..=last).contains(&row.year),
                    Rows::Range { start, end } => (start..end).contains(&here),
                };
                if !inside || (opts.empty_texts == EmptyTexts::Skip && is_blank(&row.text)) {
                    continue;
                }
                shard_row += 1;
                if shard_row <= skip_rows {
                    continue;
                }
                pending.push(row);
                if pending.len() == opts.part_rows {
                    bar.inc(pending.len() as u64);
                    flush(std::mem::take(&mut pending), next_part)?;
                    next_part += 1;
                }
            }
            Ok(())
        })?;
    if !pending.is_empty() {
        bar.inc(pending.len() as u64);
        flush(pending, next_part)?;
        next_part += 1;
    }
    bar.finish_and_clear();
    report.rows = merge_parts(&parts_dir, next_part, &output, encoder.dim(), provenance)?;
    std::fs::remove_dir_all(&parts_dir).map_err(|e| Error::io(&parts_dir, e))?;
    common::manifest::record(&opts.out_dir, &output, Some(report.rows), provenance)?;
    write_exports(opts, &output, provenance, true)?;
    tracing::info!(
        "shard {}: {} rows → {}",
        shard.name,
        report.rows,
        output.display()
    );
    Ok(report)
}

fn write_part(
    encoder: &SentenceEncoder,
    (max_texts, max_tokens): (usize, usize),
    path: &Path,
    rows: Vec<ChunkRow>,
    provenance: &Provenance,
) -> Result<()> {
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let matrix = encoder.embed_within(&texts, max_texts, max_tokens)?;
    let keys: Vec<ChunkKey> = rows
        .into_iter()
        .map(|r| ChunkKey {
            doc_id: r.doc_id,
            chunk_idx: r.chunk_idx,
            year: r.year,
        })
        .collect();
    let mut writer = EmbeddingsWriter::create(path, encoder.dim(), provenance)?;
    writer.write(&keys, &matrix)?;
    writer.finish()?;
    Ok(())
}

/// Concatenates parts `0..parts` into `output` (atomically); returns the row count.
fn merge_parts(
    parts_dir: &Path,
    parts: usize,
    output: &Path,
    dim: usize,
    provenance: &Provenance,
) -> Result<u64> {
    let mut writer = EmbeddingsWriter::create(output, dim, provenance)?;
    for k in 0..parts {
        let mut reader = EmbeddingsReader::open(&part_path(parts_dir, k))?;
        while let Some((keys, matrix)) = reader.next_rows()? {
            writer.write(&keys, &matrix)?;
        }
    }
    Ok(writer.finish()?)
}

/// Writes the requested exports of a finished shard; with `overwrite` false, only missing ones.
fn write_exports(
    opts: &Options,
    output: &Path,
    provenance: &Provenance,
    overwrite: bool,
) -> Result<()> {
    for &format in &opts.exports {
        let first = match format {
            Format::Tsv => output.with_extension("tsv"),
            Format::Npy => output.with_extension("npy"),
        };
        if !overwrite && first.exists() {
            continue;
        }
        for file in export::export(output, format, provenance)? {
            common::manifest::record(&opts.out_dir, &file, None, provenance)?;
        }
    }
    Ok(())
}
