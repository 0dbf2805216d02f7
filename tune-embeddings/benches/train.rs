//! Training throughput on CPU: MNRL steps at batch 32 with every text 128 tokens long (the
//! reference's max_seq_length), f32. Prints pairs/s, the FLOP rate it implies (forward +
//! backward ≈ 3 × forward) as a fraction of the fp32 FMA peak measured in the same run, and
//! peak memory. Target: 60 % of peak.
//!
//! Run: `cargo bench -p tune-embeddings --bench train [-- STEPS]` (after scripts/fetch-model.sh).

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use common::tables::ChunksReader;
use encoder::{Precision, SentenceEncoder};
use tune_embeddings::data::{Examples, Pair, Source};
use tune_embeddings::{tokenize, EvalSplit, Loss, Options, SplitBy, Trainer};

// See encoder::alloc for why.
#[global_allocator]
static GLOBAL: encoder::alloc::MiMalloc = encoder::alloc::MiMalloc;

const BATCH: usize = 32;
const SEQ: usize = 128;

fn main() -> anyhow::Result<()> {
    encoder::alloc::keep_freed_memory();
    let steps: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(4);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = root.join("models/all-MiniLM-L6-v2");
    anyhow::ensure!(model.exists(), "run scripts/fetch-model.sh first");
    // Pairs of consecutive long sample passages (≥ 120 words: more than 128 tokens each).
    let chunks = ChunksReader::read_all(&root.join("data/sample/chunks.parquet"))?;
    let long: Vec<_> = chunks
        .into_iter()
        .filter(|c| c.text.split_whitespace().count() >= 120)
        .collect();
    let pairs: Vec<Pair> = long
        .windows(2)
        .step_by(2)
        .take(BATCH * (steps + 1))
        .map(|w| Pair {
            anchor: w[0].text.clone(),
            positive: w[1].text.clone(),
            negative: None,
        })
        .collect();
    let examples = Examples::Pairs(pairs);
    let opts = Options {
        base_model: model.clone(),
        train: Source::Pairs(root.join("unused")),
        out: root.join("unused"),
        checkpoint_dir: None,
        resume: false,
        loss: Loss::Mnrl { scale: 20.0 },
        epochs: 1,
        batch_size: BATCH,
        mini_batch_size: None,
        lr: 2e-5,
        weight_decay: 0.01,
        warmup_ratio: 0.1,
        max_grad_norm: 1.0,
        max_seq_length: Some(SEQ),
        seed: 42,
        dropout: None,
        eval: EvalSplit::Rows(0),
        split: SplitBy::Pair,
        held_out_docs: None,
        corpus: None,
        eval_steps: None,
        best_metric: None,
        checkpoint_steps: None,
        stop_after_steps: None,
        device: "cpu".into(),
        precision: Precision::F32,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let peak = common::perf::fma_peak_gflops(threads, 1000);
    let trainer = Trainer::new(&opts, SentenceEncoder::load(&model, &Device::Cpu)?)?;
    let idx: Vec<usize> = (0..examples.len()).collect();
    let data = tokenize(&trainer.encoder, &examples, &idx)?;
    let tokens_per_pair: usize = data.columns.iter().map(|c| c[0].len()).sum();
    anyhow::ensure!(
        data.columns[0].iter().all(|t| t.len() == SEQ),
        "every text should fill {SEQ} tokens"
    );

    let batch: Vec<usize> = (0..BATCH).collect();
    trainer.batch_grads(&data, &batch, 0, 1.0)?; // warm-up
    let start = Instant::now();
    for s in 1..=steps {
        let batch: Vec<usize> = (s * BATCH..(s + 1) * BATCH).collect();
        trainer.batch_grads(&data, &batch, s as u64, 1.0)?;
    }
    let secs = start.elapsed().as_secs_f64();
    // Measured on both sides of the timed steps, so a burst of other load cannot lower it.
    let peak = peak.max(common::perf::fma_peak_gflops(threads, 1000));
    let pairs_per_s = (steps * BATCH) as f64 / secs;
    let cfg = &trainer.encoder.folder.config;
    let flops_per_pair = 3.0
        * tokens_per_pair as f64
        * encoder::bert::forward_flops_per_token(
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_hidden_layers,
            SEQ,
        );
    let gflops = pairs_per_s * flops_per_pair / 1e9;
    println!("fp32 FMA peak on {threads} threads: {peak:.0} GFLOP/s");
    println!(
        "training (MNRL, batch {BATCH}, seq {SEQ}, forward + backward, no optimizer): {pairs_per_s:.2} pairs/s, {gflops:.0} GFLOP/s = {:.1} % of peak (target 60 %: {:.1} pairs/s); peak RSS {:.2} GiB",
        100.0 * gflops / peak,
        0.6 * peak * 1e9 / flops_per_pair,
        common::perf::peak_rss_bytes().unwrap_or(0) as f64 / (1u64 << 30) as f64
    );
    Ok(())
}
