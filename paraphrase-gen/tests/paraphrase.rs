//! paraphrase-gen against a real HTTP server on 127.0.0.1: happy path, transient faults,
//! kill -9 and resume, the Batch API, and a bad key.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::provenance::Provenance;
use common::schema::{Category, Side};
use common::tables::{write_pairs, PairRow, PairsReader};
use paraphrase_gen::api::ApiConfig;
use paraphrase_gen::prompts::PromptSet;
use paraphrase_gen::{run, Options};
use support::server::{passage_of, BatchEnd, Fault, Server, DESCRIPTION, KEY};

/// `n` pairs; every third is single-synthetic (one side empty), every seventh synthetic-pair.
fn make_pairs(path: &Path, n: usize) -> Vec<PairRow> {
    let rows: Vec<PairRow> = (0..n)
        .map(|i| {
            let text = |k: usize| format!("Passage P{:04} of the annual message, part {k}.", i);
            let (category, side) = match i {
                i if i % 3 == 0 => (
                    Category::SingleSynthetic,
                    Some(if i % 2 == 0 {
                        Side::Positive
                    } else {
                        Side::Anchor
                    }),
                ),
                i if i % 7 == 0 => (Category::SyntheticPair, Some(Side::Anchor)),
                _ => (Category::Successive, None),
            };
            let (mut anchor, mut positive) = (Some(text(1)), Some(text(2)));
            if category == Category::SingleSynthetic {
                match side {
                    Some(Side::Positive) => positive = None,
                    _ => anchor = None,
                }
            }
            PairRow {
                pair_id: format!("doc{i}#0-1"),
                doc_id: format!("doc{i}"),
                year: 1900 + i as i32,
                anchor,
                positive,
                negative: None,
                category,
                paraphrase_side: side,
                provenance: Default::default(),
            }
        })
        .collect();
    write_pairs(
        path,
        &rows,
        &Provenance::new("select-pairs", "0", serde_json::Value::Null),
    )
    .unwrap();
    rows
}

fn options(server: &Server, input: &Path, out: &Path) -> Options {
    Options {
        input: input.to_path_buf(),
        out: out.to_path_buf(),
        state_dir: None,
        api: ApiConfig {
            base_url: server.url.clone(),
            api_key: KEY.into(),
            timeout: Duration::from_secs(5),
            max_retries: 6,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            max_retry_wait: Duration::from_secs(5),
        },
        model: "test-model".into(),
        prompts: PromptSet::default_set(),
        seed: 42,
        max_in_flight: 8,
        rpm: None,
        tpm: None,
        max_failures: 0,
        dry_run: false,
        price_per_1k: (0.0, 0.0),
        batch: false,
        poll_interval: Duration::from_millis(20),
        min_overlap: 0.3,
    }
}

fn flagged(rows: &[PairRow]) -> usize {
    rows.iter().filter(|r| r.paraphrase_side.is_some()).count()
}

#[test]
fn fills_every_flagged_side_and_leaves_the_rest_untouched() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.parquet");
    let rows = make_pairs(&input, 30);
    let out = dir.path().join("filled.parquet");
    let report = run(&options(&server, &input, &out)).unwrap();
    assert_eq!(
        (
            report.flagged,
            report.answered,
            report.failed,
            report.retries
        ),
        (flagged(&rows), flagged(&rows), 0, 0)
    );
    let filled = PairsReader::read_all(&out).unwrap();
    assert_eq!(filled.len(), rows.len());
    let prompt_ids: HashSet<String> = filled
        .iter()
        .filter_map(|r| r.provenance.prompt_id.clone())
        .collect();
    assert_eq!(
        prompt_ids.len(),
        2,
        "both default prompts are drawn: {prompt_ids:?}"
    );
    for (before, after) in rows.iter().zip(&filled) {
        match before.paraphrase_side {
            None => assert_eq!(before, after, "unflagged rows are untouched"),
            Some(side) => {
                let (text, other_before, other_after) = match side {
                    Side::Anchor => (&after.anchor, &before.positive, &after.positive),
                    Side::Positive => (&after.positive, &before.anchor, &after.anchor),
                };
                let text = text.as_deref().unwrap();
                assert!(text.starts_with("A paraphrase of P"), "{text}");
                assert_eq!(other_before, other_after, "the other side is kept");
                let p = &after.provenance;
                assert_eq!(p.model.as_deref(), Some("test-model"));
                assert_eq!(p.system_prompt_id.as_deref(), Some("assistant-v1"));
                assert!((0.5..=0.7).contains(&p.temperature.unwrap()));
                assert!(p.seed.is_some() && p.finish_reason.as_deref() == Some("stop"));
                assert_eq!((p.prompt_tokens, p.completion_tokens), (Some(30), Some(12)));
                assert!(
                    text.contains(&format!("{:.3}", p.temperature.unwrap())),
                    "the recorded temperature is the one sent"
                );
            }
        }
    }
    assert!(common::manifest::verify(dir.path()).unwrap().is_empty());

    // A rerun sends nothing and writes the same file.
    let first = std::fs::read(&out).unwrap();
    let requests = server.with(|s| s.log.len());
    let again = run(&options(&server, &input, &out)).unwrap();
    assert_eq!((again.requested, again.already_stored), (0, flagged(&rows)));
    assert_eq!(server.with(|s| s.log.len()), requests);
    assert_eq!(std::fs::read(&out).unwrap(), first);

    // A dry run counts without sending.
    let mut dry = options(&server, &input, &dir.path().join("dry.parquet"));
    dry.dry_run = true;
    dry.state_dir = Some(dir.path().join("dry-state"));
    dry.price_per_1k = (1.0, 2.0);
    let r = run(&dry).unwrap();
    assert_eq!(r.flagged, flagged(&rows));
    assert!(r.estimated_prompt_tokens > 0 && r.estimated_cost > 0.0);
    assert!(!dir.path().join("dry.parquet").exists());
    assert_eq!(server.with(|s| s.log.len()), requests);
}

#[test]
fn transient_faults_are_retried_with_backoff_and_retry_after() {
    let server = Server::start();
    server.with(|s| {
        s.faults.extend([
            Fault::Status {
                code: 429,
                retry_after: Some("1".into()),
            },
            Fault::Status {
                code: 500,
                retry_after: None,
            },
            Fault::Status {
                code: 503,
                retry_after: None,
            },
            Fault::Malformed,
            Fault::Slow(Duration::from_secs(3)),
        ])
    });
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.parquet");
    let rows = make_pairs(&input, 12);
    let mut opts = options(&server, &input, &dir.path().join("out.parquet"));
    opts.max_in_flight = 1; // faults hit one request after another, in order
    opts.api.timeout = Duration::from_millis(800);
    let start = std::time::Instant::now();
    let report = run(&opts).unwrap();
    assert_eq!((report.answered, report.failed), (flagged(&rows), 0));
    assert_eq!(report.retries, 5, "{report:?}");
    assert!(
        report.waited_seconds >= 1.0,
        "Retry-After: 1 must be honoured: {report:?}"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(1800),
        "1 s Retry-After + 0.8 s timeout"
    );
    // The slow request was abandoned by the client but answered later by the server.
    let log = server.with(|s| s.log.clone());
    assert_eq!(log.len(), flagged(&rows) + 5);
    assert_eq!(log.iter().filter(|l| l.status >= 429).count(), 3);
}

#[test]
fn failed_answers_are_recorded_and_counted() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.parquet");
    let rows = make_pairs(&input, 12);
    server.with(|s| s.empty_for.push("P0003".into()));
    server.with(|s| s.faults.push_back(Fault::Truncated));
    let mut opts = options(&server, &input, &dir.path().join("out.parquet"));
    opts.max_in_flight = 1;
    let e = run(&opts).unwrap_err();
    assert!(e.to_string().contains("2 of 5 paraphrases failed"), "{e}");
    assert!(!opts.out.exists());
    let failures = std::fs::read_to_string(opts.state_dir().join("failures.jsonl")).unwrap();
    assert!(
        failures.contains("empty answer") && failures.contains("finish_reason=length"),
        "{failures}"
    );
    // Allowed failures: the output leaves those pairs out. Only the two failed are asked again.
    opts.max_failures = 1;
    server.with(|s| s.log.clear());
    let r = run(&opts).unwrap();
    assert_eq!((r.requested, r.failed), (2, 1), "{r:?}");
    assert_eq!(
        PairsReader::read_all(&opts.out).unwrap().len(),
        rows.len() - 1
    );
}

fn cli(server: &Server, input: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_paraphrase-gen"));
    c.arg("--pairs").arg(input).arg("--out").arg(out).args([
        "--base-url",
        &server.url,
        "--model",
        "test-model",
    ]);
    c.args(["--initial-backoff", "0.01", "--max-backoff", "0.2"])
        .args(extra);
    c.env("OPENAI_API_KEY", KEY).env_remove("OPENAI_BASE_URL");
    c
}

fn stored_passages(state: &Path) -> HashSet<String> {
    std::fs::read_to_string(state.join("answers.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| passage_of(v["text"].as_str().unwrap()))
        .collect()
}

#[test]
fn killed_run_resumes_without_asking_twice_and_writes_the_same_output() {
    let server = Server::start();
    server.with(|s| s.latency = Duration::from_millis(60));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.parquet");
    let rows = make_pairs(&input, 150);
    let whole = dir.path().join("whole/pairs.parquet");
    assert!(cli(&server, &input, &whole, &["--max-in-flight", "4"])
        .status()
        .unwrap()
        .success());
    server.with(|s| s.log.clear());

    let out = dir.path().join("killed/pairs.parquet");
    let state = dir.path().join("killed/pairs.parquet.state");
    let mut child = cli(&server, &input, &out, &["--max-in-flight", "4"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stored_passages(&state).len() < 12 {
        assert!(
            std::time::Instant::now() < deadline,
            "no answers stored in time"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let stored = stored_passages(&state);
    assert!(stored.len() < flagged(&rows), "killed before the end");
    assert!(!out.exists());
    let before = server.with(|s| s.log.len());

    let status = cli(&server, &input, &out, &["--max-in-flight", "4"])
        .status()
        .unwrap();
    assert!(status.success());
    let rerun: Vec<String> =
        server.with(|s| s.log[before..].iter().map(|l| l.passage.clone()).collect());
    let twice: Vec<&String> = rerun.iter().filter(|p| stored.contains(*p)).collect();
    assert!(
        twice.is_empty(),
        "asked again after their answer was stored: {twice:?}"
    );
    assert_eq!(rerun.len() + stored.len(), flagged(&rows));
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&out).unwrap(),
        "output differs from the uninterrupted run"
    );
}

#[test]
fn batch_mode_end_to_end_with_resume_while_in_progress() {
    let server = Server::start();
    server.with(|s| s.polls_until_done = 1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.parquet");
    let rows = make_pairs(&input, 20);
    let out = dir.path().join("pairs.out.parquet");
    let state = dir.path().join("pairs.out.parquet.state");
    let mut child = cli(
        &server,
        &input,
        &out,
        &["--batch", "--poll-interval", "0.05"],
    )
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !state.join("batch.json").exists() || server.with(|s| s.batches.values().all(|b| b.1 < 2))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "batch not created and polled in time"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists());
    // The batch finishes while nobody polls; the rerun resumes polling the same batch.
    server.with(|s| s.polls_until_done = 0);
    let output = cli(
        &server,
        &input,
        &out,
        &["--batch", "--poll-interval", "0.05"],
    )
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        server.with(|s| (s.uploads, s.batches_created)),
        (1, 1),
        "no second upload or batch"
    );
    let filled = PairsReader::read_all(&out).unwrap();
    assert_eq!(filled.len(), rows.len());
    assert!(filled
        .iter()
        .all(|r| r.anchor.is_some() && r.positive.is_some()));
    assert!(
        !state.join("batch.json").exists(),
        "batch state cleared once merged"
    );
}

#[test]
fn a_bad_key_fails_fast_and_is_never_written_or_logged() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.parquet");
    make_pairs(&input, 30);
    let out = dir.path().join("out.parquet");
    let secret = "sk-wrong-SECRET-4242";
    let start = std::time::Instant::now();
    let output = cli(&server, &input, &out, &["--max-in-flight", "2"])
        .env("OPENAI_API_KEY", secret)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "no retries on 401"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Incorrect API key"), "{stderr}");
    assert!(
        server.with(|s| s.log.len()) <= 3,
        "stops after the first 401"
    );
    assert!(!out.exists());
    let mut everything = stderr.to_string() + &String::from_utf8_lossy(&output.stdout);
    for entry in walk(dir.path()) {
        everything += &String::from_utf8_lossy(&std::fs::read(entry).unwrap());
    }
    assert!(
        !everything.contains(secret) && !everything.contains("SECRET-4242"),
        "the key leaked"
    );

    // A key file readable by others is refused.
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY).unwrap();
    let output = cli(&server, &input, &out, &[])
        .arg("--api-key-file")
        .arg(&key_file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("chmod 600"));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

/// Runs in a thread of its own and gives up waiting after `limit`: a run that sleeps on a
/// server's word fails the test instead of hanging it.
fn run_within(
    opts: &Options,
    limit: Duration,
) -> Option<Result<paraphrase_gen::Report, paraphrase_gen::Error>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let opts = opts.clone();
    std::thread::spawn(move || {
        let _ = tx.send(run(&opts));
    });
    rx.recv_timeout(limit).ok()
}

fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_retry_after_beyond_the_cap_fails_the_rows_at_once_and_names_the_wait() {
    // A daily quota, a value no Duration holds, and a date a day ahead.
    let tomorrow =
        httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(86400));
    for header in ["86400", "1e20", tomorrow.as_str()] {
        let server = Server::start();
        server.with(|s| {
            s.always = Some(Fault::Status {
                code: 429,
                retry_after: Some(header.into()),
            })
        });
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("pairs.parquet");
        let n = flagged(&make_pairs(&input, 12));
        let opts = options(&server, &input, &dir.path().join("out.parquet"));
        let start = std::time::Instant::now();
        let e = run_within(&opts, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("Retry-After: {header} put the run to sleep"))
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10), "{header}");
        assert!(
            e.to_string()
                .contains(&format!("{n} of {n} paraphrases failed")),
            "{e}"
        );
        let failures = jsonl(&opts.state_dir().join("failures.jsonl"));
        assert_eq!(failures.len(), n, "every failed row is in failures.jsonl");
        for f in &failures {
            let error = f["error"].as_str().unwrap();
            assert!(
                error.contains(&format!("Retry-After: {header}")),
                "the message names the wait asked for: {error}"
            );
            // The wait in seconds, for the date form too (less the seconds the run took).
            let secs = if header == "1e20" {
                vec!["wait 100000000000000000000 s"]
            } else {
                vec!["wait 86400 s", "wait 86399 s", "wait 86398 s"]
            };
            assert!(secs.iter().any(|s| error.contains(s)), "{error}");
        }
        assert_eq!(
            server.with(|s| s.log.len()),
            n,
            "one request per row, no retry"
        );
    }
}

#[test]
fn retry_after_is_honoured_as_seconds_and_as_an_http_date() {
    let server = Server::start();
    let in_4s = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(4));
    server.with(|s| {
        s.faults.extend([
            Fault::Status {
                code: 429,
                retry_after: Some(in_4s),
            },
            // A date in the past: retry at once (after the backoff).
            Fault::Status {
                code: 503,
                retry_after: Some("Sun, 06 Nov 1994 08:49:37 GMT".into()),
            },
            // A value that is no HTTP form: ignored, the backoff applies.
            Fault::Status {
                code: 429,
                retry_after: Some("soon".into()),
            },
        ])
    });
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.parquet");
    let rows = make_pairs(&input, 12);
    let mut opts = options(&server, &input, &dir.path().join("out.parquet"));
    opts.max_in_flight = 1;
    let start = std::time::Instant::now();
    let report = run_within(&opts, Duration::from_secs(20)).unwrap().unwrap();
    assert_eq!((report.answered, report.retries), (flagged(&rows), 3));
    // The date is whole seconds, and the request left some time after it was written: the
    // wait asked for is in (2, 4] s.
    assert!(
        (2.0..4.5).contains(&report.waited_seconds),
        "waited {} s",
        report.waited_seconds
    );
    assert!(start.elapsed() >= Duration::from_secs(2));
}

#[test]
fn answers_in_tgi_and_sglang_shape_are_taken_with_their_finish_reason() {
    let server = Server::start();
    server.with(|s| s.always = Some(Fault::Tgi));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.parquet");
    let rows = make_pairs(&input, 12);
    let opts = options(&server, &input, &dir.path().join("out.parquet"));
    let report = run_within(&opts, Duration::from_secs(30)).unwrap().unwrap();
    assert_eq!((report.answered, report.failed), (flagged(&rows), 0));
    assert_eq!(
        server.with(|s| s.log.len()),
        flagged(&rows),
        "one generation per pair"
    );
    let filled = PairsReader::read_all(&opts.out).unwrap();
    for row in filled.iter().filter(|r| r.provenance.model.is_some()) {
        assert_eq!(row.provenance.finish_reason.as_deref(), Some("eos_token"));
        assert_eq!(row.provenance.prompt_tokens, None, "no usage sent");
    }
    assert_eq!(
        filled
            .iter()
            .filter(|r| r.provenance.model.is_some())
            .count(),
        flagged(&rows)
    );
}

#[test]
fn a_200_without_a_usable_answer_fails_its_row_after_at_most_one_retry() {
    for fault in [Fault::Malformed, Fault::NoChoices] {
        let server = Server::start();
        server.with(|s| s.always = Some(fault.clone()));
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("pairs.parquet");
        let n = flagged(&make_pairs(&input, 12));
        let opts = options(&server, &input, &dir.path().join("out.parquet"));
        let e = run_within(&opts, Duration::from_secs(30))
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains(&format!("{n} of {n}")), "{e}");
        assert_eq!(jsonl(&opts.state_dir().join("failures.jsonl")).len(), n);
        let requests = server.with(|s| s.log.len());
        assert!(
            (n..=2 * n).contains(&requests),
            "{fault:?}: {requests} generations paid for {n} pairs"
        );
    }
}

#[test]
fn reasoning_blocks_never_become_the_paraphrase() {
    for fault in [Fault::Think, Fault::Harmony] {
        let server = Server::start();
        server.with(|s| s.always = Some(fault.clone()));
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("pairs.parquet");
        let rows = make_pairs(&input, 12);
        let opts = options(&server, &input, &dir.path().join("out.parquet"));
        let report = run_within(&opts, Duration::from_secs(30)).unwrap().unwrap();
        assert_eq!(report.answered, flagged(&rows), "{fault:?}");
        let filled = PairsReader::read_all(&opts.out).unwrap();
        for (before, after) in rows.iter().zip(&filled) {
            let text = match before.paraphrase_side {
                Some(Side::Anchor) => after.anchor.as_deref().unwrap(),
                Some(Side::Positive) => after.positive.as_deref().unwrap(),
                None => continue,
            };
            assert!(text.starts_with("A paraphrase of P"), "{fault:?}: {text:?}");
            assert!(
                !text.contains("keep the names") && !text.contains('<'),
                "{text:?}"
            );
        }
    }
    // Nothing after the reasoning: a failure row, never a paraphrase.
    let server = Server::start();
    server.with(|s| s.faults.push_back(Fault::ThinkOnly));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.parquet");
    let n = flagged(&make_pairs(&input, 12));
    let mut opts = options(&server, &input, &dir.path().join("out.parquet"));
    opts.max_in_flight = 1;
    let e = run_within(&opts, Duration::from_secs(30))
        .unwrap()
        .unwrap_err();
    assert!(e.to_string().contains(&format!("1 of {n}")), "{e}");
    let failures = jsonl(&opts.state_dir().join("failures.jsonl"));
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0]["error"].as_str().unwrap().contains("reasoning"),
        "{failures:?}"
    );
}

#[test]
fn answers_that_describe_the_passage_are_rejected_and_counted() {
    let server = Server::start();
    server.with(|s| s.faults.extend([Fault::Describe, Fault::Describe]));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.parquet");
    let rows = make_pairs(&input, 12);
    let out = dir.path().join("out.parquet");
    let output = cli(
        &server,
        &input,
        &out,
        &["--max-in-flight", "1", "--max-failures", "2"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} of {} flagged pairs paraphrased",
            flagged(&rows) - 2,
            flagged(&rows)
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 answers rejected by the overlap check"),
        "{stderr}"
    );
    let failures = jsonl(&dir.path().join("out.parquet.state/failures.jsonl"));
    assert_eq!(failures.len(), 2);
    for f in &failures {
        assert_eq!(
            f["text"].as_str(),
            Some(DESCRIPTION),
            "the rejected answer is kept: {f}"
        );
        assert!(
            f["error"].as_str().unwrap().contains("--min-overlap"),
            "{f}"
        );
    }
    let filled = PairsReader::read_all(&out).unwrap();
    assert!(filled
        .iter()
        .all(|r| r.anchor.as_deref() != Some(DESCRIPTION)
            && r.positive.as_deref() != Some(DESCRIPTION)));
}

#[test]
fn help_names_the_retry_wait_cap_and_the_overlap_check() {
    let output = Command::new(env!("CARGO_BIN_EXE_paraphrase-gen"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("--max-retry-wait") && help.contains("[default: 300]"),
        "{help}"
    );
    assert!(
        help.contains("--min-overlap") && help.contains("[default: 0.3]"),
        "{help}"
    );
    // A wait that is no duration is bad input (exit 2), not a panic.
    let output = Command::new(env!("CARGO_BIN_EXE_paraphrase-gen"))
        .args([
            "--pairs",
            "p.parquet",
            "--out",
            "o.parquet",
            "--max-retry-wait=-1",
        ])
        .env("OPENAI_API_KEY", KEY)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--max-retry-wait -1"), "{stderr}");
}

#[test]
fn a_batch_that_ends_half_done_keeps_its_answers_and_a_rerun_asks_only_for_the_rest() {
    for status in ["expired", "cancelled", "failed"] {
        let server = Server::start();
        server.with(|s| {
            s.batch_end = BatchEnd::Partial {
                status,
                answered: 3,
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("pairs.parquet");
        let rows = make_pairs(&input, 20);
        let n = flagged(&rows);
        let mut opts = options(&server, &input, &dir.path().join("out.parquet"));
        opts.batch = true;
        let e = run_within(&opts, Duration::from_secs(30))
            .unwrap()
            .unwrap_err();
        assert!(
            e.to_string().contains(&format!("{} of {n}", n - 3)),
            "{status}: {e}"
        );
        let state = opts.state_dir();
        assert_eq!(
            jsonl(&state.join("answers.jsonl")).len(),
            3,
            "{status}: the billed answers are kept"
        );
        let failures = jsonl(&state.join("failures.jsonl"));
        assert_eq!(failures.len(), n - 3, "{status}");
        assert!(
            failures
                .iter()
                .all(|f| f["error"].as_str().unwrap().contains(status)),
            "{failures:?}"
        );

        server.with(|s| s.batch_end = BatchEnd::Completed);
        let report = run_within(&opts, Duration::from_secs(30)).unwrap().unwrap();
        assert_eq!(
            (report.already_stored, report.requested, report.answered),
            (3, n - 3, n)
        );
        assert_eq!(
            server.with(|s| s.uploaded_requests.clone()),
            vec![n, n - 3],
            "{status}"
        );
        let filled = PairsReader::read_all(&opts.out).unwrap();
        assert!(filled
            .iter()
            .all(|r| r.anchor.is_some() && r.positive.is_some()));
    }
    // Failed at validation: nothing was done; every row fails with the server's reason.
    let server = Server::start();
    server.with(|s| s.batch_end = BatchEnd::Invalid);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pairs.parquet");
    let n = flagged(&make_pairs(&input, 20));
    let mut opts = options(&server, &input, &dir.path().join("out.parquet"));
    opts.batch = true;
    let e = run_within(&opts, Duration::from_secs(30))
        .unwrap()
        .unwrap_err();
    assert!(e.to_string().contains(&format!("{n} of {n}")), "{e}");
    let failures = jsonl(&opts.state_dir().join("failures.jsonl"));
    assert_eq!(failures.len(), n);
    assert!(
        failures[0]["error"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{failures:?}"
    );
}
