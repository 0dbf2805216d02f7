//! Requests per second against a local OpenAI-compatible server that answers after 50 ms, at
//! --max-in-flight 64: the ceiling is 64 / 0.05 s = 1280 requests/s.
//!
//! Run: `cargo bench -p paraphrase-gen --bench requests [-- REQUESTS]`.

#[path = "../tests/support/server.rs"]
mod server;

use std::time::Duration;

use common::provenance::Provenance;
use common::schema::{Category, Side};
use common::tables::{write_pairs, PairRow};
use paraphrase_gen::api::ApiConfig;
use paraphrase_gen::prompts::PromptSet;
use paraphrase_gen::{run, Options};

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3000);
    let server = server::Server::start();
    server.with(|s| s.latency = Duration::from_millis(50));
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("pairs.parquet");
    let rows: Vec<PairRow> = (0..n)
        .map(|i| PairRow {
            pair_id: format!("p{i}"),
            doc_id: format!("d{i}"),
            year: 1900,
            anchor: Some(format!(
                "Passage P{:04} about the state of the union, {i}.",
                i % 10_000
            )),
            positive: None,
            negative: None,
            category: Category::SingleSynthetic,
            paraphrase_side: Some(Side::Positive),
            provenance: Default::default(),
        })
        .collect();
    write_pairs(
        &input,
        &rows,
        &Provenance::new("bench", "0", serde_json::Value::Null),
    )?;
    let opts = Options {
        input,
        out: dir.path().join("out.parquet"),
        state_dir: None,
        api: ApiConfig {
            base_url: server.url.clone(),
            api_key: server::KEY.into(),
            timeout: Duration::from_secs(30),
            max_retries: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            max_retry_wait: Duration::from_secs(300),
        },
        model: "bench".into(),
        prompts: PromptSet::default_set(),
        seed: 1,
        max_in_flight: 64,
        rpm: None,
        tpm: None,
        max_failures: 0,
        dry_run: false,
        price_per_1k: (0.0, 0.0),
        batch: false,
        poll_interval: Duration::from_secs(1),
        min_overlap: 0.3,
    };
    let report = run(&opts)?;
    println!(
        "paraphrase-gen: {} requests in {:.2} s = {:.0} requests/s at --max-in-flight 64 with 50 ms latency ({:.0} % of the 1280/s ceiling), {} retries",
        report.requested,
        report.seconds,
        report.requests_per_second,
        100.0 * report.requests_per_second / 1280.0,
        report.retries
    );
    Ok(())
}
