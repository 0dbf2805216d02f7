//! select-pairs end to end on a generated corpus of 1 M chunks (Parquet in, Parquet out):
//! prints the wall time and chunks/s. Target: under 10 s on 2 cores.
//!
//! Run: `cargo bench -p select-pairs --bench select [-- CHUNKS]`.

use std::time::Instant;

use common::corpus::Corpus;
use common::provenance::Provenance;
use common::tables::{ChunkRow, ChunksWriter};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use select_pairs::{run, Options, Params};

fn main() -> anyhow::Result<()> {
    let target: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let chunks = dir.path().join("chunks.parquet");
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut writer = ChunksWriter::create(
        &chunks,
        &Provenance::new("bench", "0", serde_json::Value::Null),
    )?;
    let (mut rows, mut doc) = (0, 0);
    // Passages of ~150 words' worth of bytes, documents of 1–30 chunks over two centuries.
    let filler = "lorem ipsum dolor sit amet ".repeat(35);
    while rows < target {
        let n = rng.random_range(1..=30).min(target - rows);
        let year = 1820 + rng.random_range(0..200);
        for c in 0..n {
            writer.push(ChunkRow {
                doc_id: format!("doc{doc:08}"),
                year,
                chunk_idx: c as i32,
                text: format!("{doc} {c} {filler}"),
            })?;
        }
        rows += n;
        doc += 1;
    }
    writer.finish()?;
    let size = std::fs::metadata(&chunks)?.len();

    let opts = Options {
        corpus: Corpus::Chunks(chunks),
        out: dir.path().join("pairs.parquet"),
        seed: 42,
        from_year: None,
        to_year: None,
        per_year: None,
        cap_rank: 25,
        params: Params::default(),
        held_out: None,
    };
    let start = Instant::now();
    let report = run(&opts)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "select-pairs: {rows} chunks ({doc} documents, {:.0} MB Parquet) → {} pairs in {secs:.2} s ({:.0} chunks/s, {} threads)",
        size as f64 / 1e6,
        report.pairs,
        rows as f64 / secs,
        rayon::current_num_threads()
    );
    Ok(())
}
