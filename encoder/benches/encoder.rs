//! Inference throughput of the encoder on the bundled sample corpus, CPU, f32, batch 32,
//! length-sorted: short sentences and whole passages. Prints texts/s, tokens/s and the
//! FLOP rate they imply, next to candle's matmul rate on the model's own shapes measured in
//! the same run (the ceiling this implementation can reach without faster kernels).
//!
//! Run: `cargo bench -p encoder --bench encoder` (after scripts/fetch-model.sh).

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use common::tables::ChunksReader;
use encoder::SentenceEncoder;

// See encoder::alloc for why.
#[global_allocator]
static GLOBAL: encoder::alloc::MiMalloc = encoder::alloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    encoder::alloc::keep_freed_memory();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = root.join("models/all-MiniLM-L6-v2");
    anyhow::ensure!(model.exists(), "run scripts/fetch-model.sh first");
    let encoder = SentenceEncoder::load(&model, &Device::Cpu)?;
    let chunks = ChunksReader::read_all(&root.join("data/sample/chunks.parquet"))?;

    let sentences: Vec<String> = chunks
        .iter()
        .flat_map(|c| c.text.split(". ").map(str::to_string).collect::<Vec<_>>())
        .filter(|s| s.split_whitespace().count() >= 8)
        .take(1024)
        .collect();
    let passages: Vec<String> = chunks.iter().take(192).map(|c| c.text.clone()).collect();

    let cfg = &encoder.folder.config;
    let flops_per_token = |seq: f64| {
        encoder::bert::forward_flops_per_token(
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_hidden_layers,
            seq as usize,
        )
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let peak = common::perf::fma_peak_gflops(threads, 1000);
    let gemm = matmul_gflops(cfg.hidden_size, cfg.intermediate_size)?;
    println!("fp32 FMA peak on {threads} threads: {peak:.0} GFLOP/s");
    println!(
        "candle matmul on [4096 x {h}] x [{h} x {i}]: {gemm:.0} GFLOP/s ({r:.2} of peak)",
        h = cfg.hidden_size,
        i = cfg.intermediate_size,
        r = gemm / peak
    );

    for (name, texts) in [("sentences", &sentences), ("passages", &passages)] {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let ids = encoder.tokenizer.encode_batch(&refs)?;
        let tokens: usize = ids.iter().map(Vec::len).sum();
        let mean = tokens as f64 / ids.len() as f64;
        encoder.embed(&refs[..64.min(refs.len())], 32)?; // warm-up
        let start = Instant::now();
        encoder.embed(&refs, 32)?;
        let secs = start.elapsed().as_secs_f64();
        let gflops = tokens as f64 * flops_per_token(mean) / secs / 1e9;
        println!(
            "{name:>9}: {n} texts, {mean:.0} tokens on average: {tps:.1} texts/s, {toks:.0} tokens/s, {gflops:.0} GFLOP/s ({ratio:.2} of peak, {mm:.2} of the matmul rate)",
            n = ids.len(),
            tps = ids.len() as f64 / secs,
            toks = tokens as f64 / secs,
            ratio = gflops / peak,
            mm = gflops / gemm,
        );
    }
    Ok(())
}

fn matmul_gflops(hidden: usize, inter: usize) -> anyhow::Result<f64> {
    let a = Tensor::randn(0f32, 1.0, (4096, hidden), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (inter, hidden), &Device::Cpu)?;
    a.matmul(&b.t()?)?;
    let reps = 20;
    let start = Instant::now();
    for _ in 0..reps {
        a.matmul(&b.t()?)?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(reps as f64 * 2.0 * 4096.0 * hidden as f64 * inter as f64 / secs / 1e9)
}
