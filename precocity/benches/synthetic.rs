//! The precocity stage on a synthetic corpus shaped like the researchers' (≈ 280,000 chunks over
//! 119 years, from ≈ 100 to ≈ 4,600 chunks a year, 384 dimensions, 12-chunk documents, a tenth
//! of them training documents, a fifth with an author overlap), as apply-model writes it (one
//! shard per decade). Prints wall and CPU time, comparisons per second, matmul GFLOP/s as a
//! fraction of the fp32 FMA peak measured in the same run, and peak RSS of the run alone.
//!
//! `cargo bench -p precocity --bench synthetic` (PRECOCITY_BENCH_CHUNKS to change the size).

use std::fmt::Write;
use std::time::Instant;

use common::perf::{fma_peak_gflops, peak_rss_bytes};
use common::provenance::Provenance;
use common::tables::{ChunkKey, EmbeddingsWriter};
use precocity::{run, Distance, Grid, Input, Options, TrainDocs};
use rand::{Rng, SeedableRng};

const DIM: usize = 384;
const YEARS: i32 = 119;
const DOC_CHUNKS: usize = 12;

/// CPU seconds of this process (all threads), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let total: usize = std::env::var("PRECOCITY_BENCH_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(280_000);
    let threads = rayon::current_num_threads();
    let dir = tempfile::tempdir().unwrap();
    let emb = dir.path().join("embeddings");
    // A linear ramp from `first` chunks in year 0 to 4,600·total/280,000 in the last.
    let last = 4600.0 * total as f64 / 280_000.0;
    let first = 2.0 * total as f64 / YEARS as f64 - last;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(18);
    let shared: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect();
    let (mut train, mut authors) = (String::new(), String::new());
    let mut docs = 0usize;
    let start = Instant::now();
    for decade in (1900..1900 + YEARS).step_by(10) {
        let prov = Provenance::new("bench", "0", serde_json::Value::Null);
        let mut w =
            EmbeddingsWriter::create(&emb.join(format!("{decade}.parquet")), DIM, &prov).unwrap();
        for year in decade..(decade + 10).min(1900 + YEARS) {
            let t = (year - 1900) as f64 / (YEARS - 1) as f64;
            let n = (first + (last - first) * t).round().max(1.0) as usize;
            let (mut keys, mut matrix) = (Vec::with_capacity(n), Vec::with_capacity(n * DIM));
            for c in 0..n {
                if c % DOC_CHUNKS == 0 {
                    docs += 1;
                    let id = format!("doc{docs}");
                    if docs.is_multiple_of(10) {
                        writeln!(train, "{id}").unwrap();
                    }
                    if docs.is_multiple_of(5) {
                        writeln!(authors, "{id}\tdoc{}", docs + 3 * n / DOC_CHUNKS).unwrap();
                    }
                }
                keys.push(ChunkKey {
                    doc_id: format!("doc{docs}"),
                    chunk_idx: (c % DOC_CHUNKS) as i32,
                    year,
                });
                matrix.extend(shared.iter().map(|&s| s + rng.random_range(-1.0f32..1.0)));
            }
            w.write(&keys, &matrix).unwrap();
        }
        w.finish().unwrap();
    }
    std::fs::write(dir.path().join("train.txt"), train).unwrap();
    std::fs::write(dir.path().join("authors.tsv"), authors).unwrap();
    eprintln!("corpus: {total} chunks, {docs} documents, {YEARS} years ({first:.0} → {last:.0} a year), {DIM} dims, written in {:.1} s", start.elapsed().as_secs_f64());

    let peak = fma_peak_gflops(threads, 2000);
    // Peak RSS of the run alone: reset the high-water mark left by writing the corpus.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let opts = Options {
        input: Input::Embeddings(emb),
        out_dir: dir.path().join("out"),
        train: Some(TrainDocs::List(dir.path().join("train.txt"))),
        authors: Some(dir.path().join("authors.tsv")),
        quotes: None,
        from_year: None,
        to_year: None,
        grid: Grid::default(),
        distance: Distance::Cosine,
        task: None,
    };
    let (cpu0, wall) = (cpu_seconds(), Instant::now());
    let report = run(&opts).unwrap();
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let gflops = report.pairs as f64 * 2.0 * DIM as f64 / wall / 1e9;
    println!(
        "precocity, {total} chunks on {threads} threads: {wall:.1} s wall, {cpu:.1} s CPU ({:.0} % of {threads} cores), {:.3e} pairs, {:.1} ns CPU per pair",
        100.0 * cpu / wall / threads as f64,
        report.pairs as f64,
        cpu * 1e9 / report.pairs as f64
    );
    println!(
        "matmul {gflops:.1} GFLOP/s = {:.2} of the fp32 FMA peak ({peak:.1} GFLOP/s on {threads} threads, same run); per CPU second {:.2} of peak",
        gflops / peak,
        report.pairs as f64 * 2.0 * DIM as f64 / cpu / 1e9 / (peak / threads as f64)
    );
    println!(
        "peak RSS {:.0} MB",
        peak_rss_bytes().unwrap_or(0) as f64 / 1e6
    );
}
