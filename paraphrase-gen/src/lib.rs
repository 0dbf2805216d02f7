//! paraphrase-gen: fills the pairs select-pairs flagged, through an OpenAI-compatible chat API.
//!
//! For a `single-synthetic` pair the empty side becomes a paraphrase of the other side; for a
//! `synthetic-pair` the flagged side is replaced by a paraphrase of itself. Requests run
//! concurrently within `max_in_flight`, `rpm` and `tpm`; every answer is appended durably to
//! `STATE/answers.jsonl` as it arrives, so a rerun after a crash asks only for what is
//! missing, and the output is a pure function of the input and the stored answers.
//!
//! Responses are read leniently ([`response`]), reasoning left in the content is cut away, and
//! answers that share too few content words with their source are refused ([`overlap`]).
//! Every row without a paraphrase at the end of a run has a line in `STATE/failures.jsonl`.

pub mod api;
pub mod batch;
pub mod overlap;
pub mod prompts;
pub mod response;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage, CreateChatCompletionRequest,
};
use common::provenance::Provenance;
use common::schema::{Category, Side};
use common::tables::{write_pairs, PairRow, PairsReader};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::Value;

use api::{ApiConfig, CallError, RateLimiter, RetryStats};
use prompts::PromptSet;
use store::{answer_key, Answer, Failure, FailureKind, Journal};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Common(#[from] common::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("the API refused the request, stopping: {0}")]
    Fatal(String),
    #[error("{failed} of {total} paraphrases failed (more than --max-failures {max}; in this run {unusable} answers were unusable and {low_overlap} rejected by the overlap check); see {file}")]
    TooManyFailures {
        failed: usize,
        total: usize,
        max: usize,
        unusable: usize,
        low_overlap: usize,
        file: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Common(e) => e.is_bad_input(),
            Error::Invalid(_) | Error::Fatal(_) => true,
            Error::TooManyFailures { .. } | Error::Io { .. } => false,
        }
    }
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.into(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub input: PathBuf,
    pub out: PathBuf,
    /// Folder of answers.jsonl, failures.jsonl and batch state [default: `<out>.state`].
    pub state_dir: Option<PathBuf>,
    pub api: ApiConfig,
    pub model: String,
    pub prompts: PromptSet,
    pub seed: u64,
    pub max_in_flight: usize,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub max_failures: usize,
    pub dry_run: bool,
    /// Price per 1k prompt and completion tokens, for the dry-run estimate.
    pub price_per_1k: (f64, f64),
    pub batch: bool,
    pub poll_interval: std::time::Duration,
    /// Least share of an answer's content words found in its source ([`overlap::overlap`]);
    /// answers below it are failures of kind `low_overlap`. 0 turns the check off.
    pub min_overlap: f64,
}

impl Options {
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| {
            let name = self
                .out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            self.out
                .with_file_name(format!("{}.state", name.unwrap_or_else(|| "pairs".into())))
        })
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub flagged: usize,
    pub already_stored: usize,
    pub requested: usize,
    pub answered: usize,
    pub failed: usize,
    /// Answers received in this run but not taken (empty, truncated, refused, only reasoning).
    pub unusable: usize,
    /// Answers received in this run and refused by the overlap check.
    pub low_overlap: usize,
    pub retries: u64,
    pub waited_seconds: f64,
    pub estimated_prompt_tokens: u64,
    pub estimated_completion_tokens: u64,
    pub estimated_cost: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub output: Option<PathBuf>,
    pub failures_file: Option<PathBuf>,
}

/// One paraphrase to ask for.
#[derive(Debug, Clone)]
pub struct Job {
    pub key: String,
    pub pair_id: String,
    pub request: CreateChatCompletionRequest,
    /// The text the paraphrase is of, for the overlap check.
    pub source: String,
    pub system_prompt_id: Option<String>,
    pub prompt_id: String,
    pub temperature: f32,
    pub seed: i64,
    pub estimated_prompt_tokens: u32,
}

/// The text to paraphrase for a flagged row.
fn source_text(row: &PairRow) -> Option<&str> {
    let side = row.paraphrase_side?;
    match row.category {
        // The empty side is written from the other one.
        Category::SingleSynthetic => match side {
            Side::Anchor => row.positive.as_deref(),
            Side::Positive => row.anchor.as_deref(),
        },
        // The flagged side is replaced by a paraphrase of itself.
        _ => match side {
            Side::Anchor => row.anchor.as_deref(),
            Side::Positive => row.positive.as_deref(),
        },
    }
}

fn row_seed(seed: u64, pair_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.to_le_bytes().iter().chain(pair_id.as_bytes()) {
        h = (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The request for one flagged row: prompt and temperature drawn from the row's own seeded RNG,
/// so they do not depend on which rows ran before.
pub fn plan_job(opts: &Options, row: &PairRow, prompts_hash: &str) -> Result<Job, Error> {
    let text = source_text(row).ok_or_else(|| {
        Error::Invalid(format!(
            "pair {}: flagged for a paraphrase but the text to paraphrase is missing",
            row.pair_id
        ))
    })?;
    let seed = row_seed(opts.seed, &row.pair_id);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let p = &opts.prompts;
    let system = (!p.system.is_empty()).then(|| &p.system[rng.random_range(0..p.system.len())]);
    let user = &p.user[rng.random_range(0..p.user.len())];
    let temperature = if p.temperature_max > p.temperature_min {
        rng.random_range(p.temperature_min..=p.temperature_max)
    } else {
        p.temperature_min
    };
    let content = user.text.replace("{text}", text);
    let mut messages: Vec<ChatCompletionRequestMessage> = Vec::new();
    if let Some(s) = system {
        messages.push(ChatCompletionRequestSystemMessage::from(s.text.as_str()).into());
    }
    messages.push(ChatCompletionRequestUserMessage::from(content.as_str()).into());
    let request_seed = (seed >> 1) as i64;
    #[allow(deprecated)] // `max_tokens`: what vLLM, llama.cpp and Ollama understand
    let request = CreateChatCompletionRequest {
        model: opts.model.clone(),
        messages,
        temperature: Some(temperature),
        max_tokens: Some(p.max_tokens),
        seed: Some(request_seed),
        ..Default::default()
    };
    let chars = content.len() + system.map_or(0, |s| s.text.len());
    Ok(Job {
        key: answer_key(&row.pair_id, prompts_hash),
        pair_id: row.pair_id.clone(),
        request,
        source: text.to_string(),
        system_prompt_id: system.map(|s| s.id.clone()),
        prompt_id: user.id.clone(),
        temperature,
        seed: request_seed,
        estimated_prompt_tokens: (chars / 4) as u32 + 8,
    })
}

/// Why a response gave no paraphrase: what goes to `failures.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub kind: FailureKind,
    pub error: String,
    /// The answer not taken, when there was one.
    pub text: Option<String>,
}

impl Rejection {
    pub(crate) fn into_failure(self, job: &Job, attempts: u32) -> Failure {
        Failure {
            key: job.key.clone(),
            pair_id: job.pair_id.clone(),
            error: self.error,
            attempts,
            kind: self.kind,
            text: self.text,
        }
    }
}

/// Turns a chat completion body into an answer, or says why it gives none: no answer in the
/// body, a refusal, a truncated or withheld answer (finish reason `length` or
/// `content_filter`), nothing after the reasoning block, an empty answer, or (when
/// `min_overlap` > 0) fewer than `min_overlap` of its content words found in the source. Any
/// other finish reason (`stop`, TGI's `eos_token`, …) is taken and recorded verbatim.
pub fn to_answer(
    job: &Job,
    model: &str,
    body: &Value,
    min_overlap: f64,
) -> Result<Answer, Rejection> {
    let unusable = |error: String, text: Option<&str>| Rejection {
        kind: FailureKind::Unusable,
        error,
        text: text.filter(|t| !t.trim().is_empty()).map(str::to_string),
    };
    let c = response::parse_completion(body).map_err(|error| Rejection {
        kind: FailureKind::Request,
        error,
        text: None,
    })?;
    if let Some(refusal) = &c.refusal {
        return Err(unusable(format!("refusal: {refusal}"), None));
    }
    let raw = c.content.as_deref().unwrap_or("");
    match c.finish_reason.as_deref() {
        Some("length") => {
            return Err(unusable(
                "truncated answer (finish_reason=length)".into(),
                Some(raw),
            ))
        }
        Some("content_filter") => {
            return Err(unusable(
                "answer withheld by the content filter".into(),
                None,
            ))
        }
        _ => {}
    }
    let text = response::strip_reasoning(raw).map_err(|e| unusable(e, Some(raw)))?;
    if text.is_empty() {
        return Err(unusable("empty answer".into(), None));
    }
    if min_overlap > 0.0 {
        let share = overlap::overlap(&text, &job.source);
        if share < min_overlap {
            return Err(Rejection {
                kind: FailureKind::LowOverlap,
                error: format!(
                    "the answer shares {:.0} % of its content words with the source, less than --min-overlap {min_overlap}: it may describe the passage rather than paraphrase it",
                    share * 100.0
                ),
                text: Some(text),
            });
        }
    }
    Ok(Answer {
        key: job.key.clone(),
        pair_id: job.pair_id.clone(),
        text,
        model: c.model.unwrap_or_else(|| model.to_string()),
        system_prompt_id: job.system_prompt_id.clone(),
        prompt_id: job.prompt_id.clone(),
        temperature: job.temperature,
        seed: job.seed,
        finish_reason: c.finish_reason,
        prompt_tokens: c.prompt_tokens,
        completion_tokens: c.completion_tokens,
    })
}

enum Outcome {
    Answer(Answer),
    Failure(Failure),
    Fatal(String),
}

/// Where outcomes go as they arrive: the fsynced journals, the answers in memory, and what
/// this run settled, for the report and for rows left without an outcome.
struct Sink {
    answers: Journal,
    failures: Journal,
    stored: HashMap<String, Answer>,
    settled: HashSet<String>,
    unusable: usize,
    low_overlap: usize,
}

impl Sink {
    /// Journals one outcome; returns the message of a fatal one.
    fn record(&mut self, outcome: Outcome) -> Result<Option<String>, Error> {
        match outcome {
            Outcome::Answer(a) => {
                let path = self.answers.path().to_path_buf();
                self.answers.append(&a).map_err(io(&path))?;
                self.settled.insert(a.key.clone());
                self.stored.insert(a.key.clone(), a);
            }
            Outcome::Failure(f) => {
                tracing::warn!("pair {}: {}", f.pair_id, f.error);
                match f.kind {
                    FailureKind::Unusable => self.unusable += 1,
                    FailureKind::LowOverlap => self.low_overlap += 1,
                    FailureKind::Request => {}
                }
                let path = self.failures.path().to_path_buf();
                self.failures.append(&f).map_err(io(&path))?;
                self.settled.insert(f.key);
            }
            Outcome::Fatal(e) => return Ok(Some(e)),
        }
        Ok(None)
    }
}

pub fn run(opts: &Options) -> Result<Report, Error> {
    opts.prompts.validate().map_err(Error::Invalid)?;
    if opts.max_in_flight == 0 {
        return Err(Error::Invalid("--max-in-flight must be at least 1".into()));
    }
    if !(0.0..=1.0).contains(&opts.min_overlap) {
        return Err(Error::Invalid(format!(
            "--min-overlap {} is not a share in [0, 1]",
            opts.min_overlap
        )));
    }
    let rows = PairsReader::read_all(&opts.input)?;
    let prompts_hash = opts.prompts.hash();
    let state = opts.state_dir();
    std::fs::create_dir_all(&state).map_err(io(&state))?;
    let answers_path = state.join("answers.jsonl");
    let stored = store::load_answers(&answers_path).map_err(io(&answers_path))?;

    let mut jobs = Vec::new();
    let mut report = Report::default();
    for row in rows.iter().filter(|r| r.paraphrase_side.is_some()) {
        report.flagged += 1;
        let job = plan_job(opts, row, &prompts_hash)?;
        report.estimated_prompt_tokens += job.estimated_prompt_tokens as u64;
        report.estimated_completion_tokens += opts.prompts.max_tokens as u64;
        if stored.contains_key(&job.key) {
            report.already_stored += 1;
        } else {
            jobs.push(job);
        }
    }
    report.estimated_cost = report.estimated_prompt_tokens as f64 / 1000.0 * opts.price_per_1k.0
        + report.estimated_completion_tokens as f64 / 1000.0 * opts.price_per_1k.1;
    if opts.dry_run {
        return Ok(report);
    }

    let start = std::time::Instant::now();
    let failures_path = state.join("failures.jsonl");
    let mut sink = Sink {
        answers: Journal::open(&answers_path).map_err(io(&answers_path))?,
        failures: Journal::open(&failures_path).map_err(io(&failures_path))?,
        stored,
        settled: HashSet::new(),
        unusable: 0,
        low_overlap: 0,
    };
    let stats = Arc::new(RetryStats::default());
    report.requested = jobs.len();
    let planned: Vec<(String, String)> = jobs
        .iter()
        .map(|j| (j.key.clone(), j.pair_id.clone()))
        .collect();
    let fatal = if jobs.is_empty() {
        None
    } else if opts.batch {
        record_batch(opts, &state, jobs, &mut sink)?
    } else {
        run_concurrently(opts, jobs, &stats, &mut sink)?
    };
    if let Some(e) = fatal {
        return Err(Error::Fatal(e));
    }
    // Whatever ended a request without an outcome, its row is a failure on record.
    let unsettled: Vec<&(String, String)> = planned
        .iter()
        .filter(|(key, _)| !sink.settled.contains(key))
        .collect();
    for (key, pair_id) in unsettled {
        let error = "no outcome was recorded for this request".to_string();
        sink.record(Outcome::Failure(Failure::request(key, pair_id, error, 0)))?;
    }
    report.retries = stats.retries.load(Ordering::Relaxed);
    report.waited_seconds = stats.waited_ms.load(Ordering::Relaxed) as f64 / 1000.0;
    report.seconds = start.elapsed().as_secs_f64();
    report.requests_per_second = report.requested as f64 / report.seconds.max(1e-9);
    (report.unusable, report.low_overlap) = (sink.unusable, sink.low_overlap);
    report.failures_file = Some(failures_path);
    write_output(opts, rows, &sink.stored, &prompts_hash, report)
}

/// The output: every row, flagged sides filled from the stored answers; rows whose
/// paraphrase failed are left out (and listed in failures.jsonl). Fails without writing when
/// more than `max_failures` are missing.
fn write_output(
    opts: &Options,
    rows: Vec<PairRow>,
    stored: &HashMap<String, Answer>,
    prompts_hash: &str,
    mut report: Report,
) -> Result<Report, Error> {
    let mut out_rows = Vec::with_capacity(rows.len());
    let mut missing = Vec::new();
    for mut row in rows {
        if let Some(side) = row.paraphrase_side {
            let key = answer_key(&row.pair_id, prompts_hash);
            let Some(a) = stored.get(&key) else {
                missing.push(row.pair_id.clone());
                continue;
            };
            report.prompt_tokens += a.prompt_tokens.unwrap_or(0) as u64;
            report.completion_tokens += a.completion_tokens.unwrap_or(0) as u64;
            match side {
                Side::Anchor => row.anchor = Some(a.text.clone()),
                Side::Positive => row.positive = Some(a.text.clone()),
            }
            row.provenance = common::tables::ParaphraseProvenance {
                model: Some(a.model.clone()),
                system_prompt_id: a.system_prompt_id.clone(),
                prompt_id: Some(a.prompt_id.clone()),
                temperature: Some(a.temperature),
                seed: Some(a.seed),
                finish_reason: a.finish_reason.clone(),
                prompt_tokens: a.prompt_tokens,
                completion_tokens: a.completion_tokens,
            };
        }
        out_rows.push(row);
    }
    report.answered = report.flagged - missing.len();
    report.failed = missing.len();
    if missing.len() > opts.max_failures {
        return Err(Error::TooManyFailures {
            failed: missing.len(),
            total: report.flagged,
            max: opts.max_failures,
            unusable: report.unusable,
            low_overlap: report.low_overlap,
            file: report
                .failures_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        });
    }
    let params = serde_json::json!({
        "model": opts.model,
        "base_url": opts.api.base_url,
        "prompts": opts.prompts,
        "prompts_hash": prompts_hash,
        "seed": opts.seed,
        "min_overlap": opts.min_overlap,
        "omitted_failed_pairs": missing,
    });
    let provenance = Provenance::new("paraphrase-gen", env!("CARGO_PKG_VERSION"), params)
        .with_input(&opts.input)?;
    let rows_written = write_pairs(&opts.out, &out_rows, &provenance)?;
    common::manifest::record_beside(&opts.out, Some(rows_written), &provenance)?;
    report.output = Some(opts.out.clone());
    Ok(report)
}

/// Runs the jobs as one batch and journals its results, all at once; then the ended batch is
/// forgotten, so a rerun submits only what is still missing.
fn record_batch(
    opts: &Options,
    state: &std::path::Path,
    jobs: Vec<Job>,
    sink: &mut Sink,
) -> Result<Option<String>, Error> {
    for outcome in batch::run_batch(opts, state, jobs)? {
        if let Some(e) = sink.record(outcome)? {
            return Ok(Some(e));
        }
    }
    let _ = std::fs::remove_file(state.join(batch::STATE_FILE));
    Ok(None)
}

/// Sends the jobs with at most `max_in_flight` in the air, journalling each outcome as it
/// arrives. Stops launching after a fatal answer, and returns its message.
fn run_concurrently(
    opts: &Options,
    jobs: Vec<Job>,
    stats: &Arc<RetryStats>,
    sink: &mut Sink,
) -> Result<Option<String>, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io(&opts.out))?;
    let client = api::client(&opts.api).map_err(Error::Invalid)?;
    let limiter = Arc::new(RateLimiter::new(opts.rpm, opts.tpm));
    let bar = common::progress::bar(jobs.len() as u64, "paraphrases");
    runtime.block_on(async {
        let semaphore = Arc::new(tokio::sync::Semaphore::new(opts.max_in_flight));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
        for job in jobs {
            let permit = semaphore
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore open");
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let (client, limiter, stats, tx, stop) = (
                client.clone(),
                limiter.clone(),
                stats.clone(),
                tx.clone(),
                stop.clone(),
            );
            let (api, model, max_tokens, min_overlap) = (
                opts.api.clone(),
                opts.model.clone(),
                opts.prompts.max_tokens,
                opts.min_overlap,
            );
            tokio::spawn(async move {
                let _permit = permit;
                limiter
                    .acquire(job.estimated_prompt_tokens + max_tokens)
                    .await;
                // The body as JSON, read leniently by `to_answer`: servers' completions
                // differ from OpenAI's schema in ways a strict type refuses.
                let result = api::with_retries(&api, &stats, || {
                    let (c, r) = (client.clone(), job.request.clone());
                    async move { c.chat().create_byot::<_, Value>(r).await }
                })
                .await;
                let outcome = match result {
                    Ok(body) => match to_answer(&job, &model, &body, min_overlap) {
                        Ok(a) => Outcome::Answer(a),
                        Err(r) => Outcome::Failure(r.into_failure(&job, 1)),
                    },
                    Err(CallError::Failed { error, attempts }) => {
                        Outcome::Failure(Failure::request(&job.key, &job.pair_id, error, attempts))
                    }
                    Err(CallError::Fatal(e)) => {
                        stop.store(true, Ordering::Relaxed);
                        Outcome::Fatal(e)
                    }
                };
                let _ = tx.send(outcome);
            });
            // Journal what has arrived while launching, so a kill loses as little as possible.
            while let Ok(outcome) = rx.try_recv() {
                bar.inc(1);
                if let Some(fatal) = sink.record(outcome)? {
                    return Ok(Some(fatal));
                }
            }
        }
        drop(tx);
        let mut fatal = None;
        while let Some(outcome) = rx.recv().await {
            bar.inc(1);
            if let Some(e) = sink.record(outcome)? {
                fatal.get_or_insert(e);
            }
        }
        bar.finish_and_clear();
        Ok(fatal)
    })
}
