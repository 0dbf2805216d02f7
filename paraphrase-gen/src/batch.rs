//! Batch API mode: the requests go up as one JSONL file, a batch is created, polled until it
//! ends, and its output and error files are merged. The batch id is saved in
//! `STATE/batch.json` before polling starts, so a rerun after a kill resumes polling instead
//! of paying twice.
//!
//! A batch that ends `expired`, `cancelled` or `failed` may still have an output file with the
//! answers it finished (and billed) and an error file for the rest: both are read like a
//! completed batch's, so those answers are journalled, every other request becomes a failure
//! row naming how the batch ended, and a rerun submits only what is missing. Batch objects
//! and result lines are read as JSON, leniently, like chat completions.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use async_openai::types::batches::{BatchCompletionWindow, BatchEndpoint, BatchRequest};
use async_openai::types::files::{CreateFileRequest, FileInput, FilePurpose};
use async_openai::types::InputSource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{self, RetryStats};
use crate::store::Failure;
use crate::{io, to_answer, Error, Job, Options, Outcome};

pub const STATE_FILE: &str = "batch.json";

#[derive(Debug, Serialize, Deserialize)]
struct BatchState {
    batch_id: String,
    input_file_id: String,
}

fn api_error(what: &str) -> impl FnOnce(api::CallError) -> Error + '_ {
    move |e| match e {
        api::CallError::Fatal(m) => Error::Fatal(format!("{what}: {m}")),
        api::CallError::Failed { error, .. } => Error::Invalid(format!("{what}: {error}")),
    }
}

/// An id field of a server's JSON object, or an error naming what was being done.
fn id_of(value: &Value, field: &str, what: &str) -> Result<String, Error> {
    value[field]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Invalid(format!("{what}: no `{field}` in the answer: {value}")))
}

/// Uploads the requests and creates the batch; the state is saved before anything is polled.
async fn submit(
    opts: &Options,
    client: &async_openai::Client<async_openai::config::OpenAIConfig>,
    stats: &std::sync::Arc<RetryStats>,
    state_path: &Path,
    jobs: &[Job],
) -> Result<BatchState, Error> {
    let mut jsonl = Vec::new();
    for job in jobs {
        let line = serde_json::json!({"custom_id": job.key, "method": "POST", "url": "/v1/chat/completions", "body": job.request});
        jsonl.extend(serde_json::to_vec(&line).expect("request serializes"));
        jsonl.push(b'\n');
    }
    let upload = CreateFileRequest {
        file: FileInput {
            source: InputSource::VecU8 {
                filename: "paraphrase-requests.jsonl".into(),
                vec: jsonl,
            },
        },
        purpose: FilePurpose::Batch,
        expires_after: None,
    };
    let file: Value = api::with_retries(&opts.api, stats, || {
        let (c, u) = (client.clone(), upload.clone());
        async move { c.files().create_byot::<_, Value>(u).await }
    })
    .await
    .map_err(api_error("uploading the batch input"))?;
    let input_file_id = id_of(&file, "id", "uploading the batch input")?;
    let request = BatchRequest {
        input_file_id: input_file_id.clone(),
        endpoint: BatchEndpoint::V1ChatCompletions,
        completion_window: BatchCompletionWindow::W24H,
        metadata: None,
        output_expires_after: None,
    };
    let batch: Value = api::with_retries(&opts.api, stats, || {
        let (c, r) = (client.clone(), request.clone());
        async move { c.batches().create_byot::<_, Value>(r).await }
    })
    .await
    .map_err(api_error("creating the batch"))?;
    let state = BatchState {
        batch_id: id_of(&batch, "id", "creating the batch")?,
        input_file_id,
    };
    let json = serde_json::to_vec_pretty(&state).expect("state serializes");
    common::atomic::write_atomic(state_path, &json)?;
    tracing::info!("created batch {} ({} requests)", state.batch_id, jobs.len());
    Ok(state)
}

/// Submits the jobs as a batch (or resumes polling the saved one) and returns an outcome for
/// every job: the answers and failures of its output and error files, and a failure for each
/// request they do not mention.
pub(crate) fn run_batch(
    opts: &Options,
    state_dir: &Path,
    jobs: Vec<Job>,
) -> Result<Vec<Outcome>, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io(state_dir))?;
    let client = api::client(&opts.api).map_err(Error::Invalid)?;
    let stats = std::sync::Arc::new(RetryStats::default());
    let state_path = state_dir.join(STATE_FILE);
    let by_key: HashMap<String, Job> = jobs.iter().map(|j| (j.key.clone(), j.clone())).collect();
    runtime.block_on(async {
        let state: BatchState = if state_path.exists() {
            let bytes = std::fs::read(&state_path).map_err(io(&state_path))?;
            let state: BatchState = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Invalid(format!("{}: {e}", state_path.display())))?;
            tracing::info!("resuming batch {}", state.batch_id);
            state
        } else {
            submit(opts, &client, &stats, &state_path, &jobs).await?
        };

        let (batch, status) = loop {
            let batch: Value = api::with_retries(&opts.api, &stats, || {
                let (c, id) = (client.clone(), state.batch_id.clone());
                async move { c.batches().retrieve_byot::<_, Value>(id).await }
            })
            .await
            .map_err(api_error("polling the batch"))?;
            let status = batch["status"].as_str().unwrap_or_default().to_string();
            match status.as_str() {
                "completed" | "expired" | "cancelled" | "failed" => break (batch, status),
                // validating, in_progress, finalizing; cancelling: its files come once cancelled.
                _ => tokio::time::sleep(opts.poll_interval).await,
            }
        };
        if status != "completed" {
            tracing::warn!(
                "batch {} ended {status}: keeping the answers it finished",
                state.batch_id
            );
        }

        let mut outcomes = Vec::new();
        for field in ["output_file_id", "error_file_id"] {
            let Some(file_id) = batch[field].as_str() else {
                continue;
            };
            let bytes = api::with_retries(&opts.api, &stats, || {
                let (c, id) = (client.clone(), file_id.to_string());
                async move { c.files().content(&id).await }
            })
            .await
            .map_err(api_error("downloading the batch results"))?;
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                outcomes.extend(parse_result_line(line, &by_key, opts));
            }
        }
        // How the batch ended goes into every failure's message, with the batch's own errors
        // (a batch that failed validation has only those).
        let errors: Vec<&str> = batch["errors"]["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["message"].as_str())
            .collect();
        let mut ended = format!("batch {} ended {status}", state.batch_id);
        if !errors.is_empty() {
            ended += &format!(": {}", errors.join("; "));
        }
        let mut seen = HashSet::new();
        for outcome in &mut outcomes {
            match outcome {
                Outcome::Answer(a) => seen.insert(a.key.clone()),
                Outcome::Failure(f) => {
                    if status != "completed" {
                        f.error = format!("{} ({ended})", f.error);
                    }
                    seen.insert(f.key.clone())
                }
                Outcome::Fatal(_) => false,
            };
        }
        for job in jobs.iter().filter(|j| !seen.contains(&j.key)) {
            let error = format!("{ended} without a result for this request");
            outcomes.push(Outcome::Failure(Failure::request(
                &job.key,
                &job.pair_id,
                error,
                1,
            )));
        }
        Ok(outcomes)
    })
}

/// One line of a batch output or error file; `None` for a line that names no job of ours.
fn parse_result_line(line: &[u8], jobs: &HashMap<String, Job>, opts: &Options) -> Option<Outcome> {
    let value: Value = serde_json::from_slice(line).ok()?;
    let job = jobs.get(value["custom_id"].as_str()?)?;
    let status = value["response"]["status_code"].as_u64();
    if status != Some(200) {
        let (error, body_error) = (&value["error"], &value["response"]["body"]["error"]);
        let field = |name: &str| error[name].as_str().or(body_error[name].as_str());
        let mut what = status.map_or("no response".to_string(), |s| format!("HTTP {s}"));
        if let Some(code) = field("code") {
            what += &format!(", {code}");
        }
        let error = format!(
            "batch request failed ({what}): {}",
            field("message").unwrap_or("no message")
        );
        return Some(Outcome::Failure(Failure::request(
            &job.key,
            &job.pair_id,
            error,
            1,
        )));
    }
    Some(
        match to_answer(
            job,
            &opts.model,
            &value["response"]["body"],
            opts.min_overlap,
        ) {
            Ok(answer) => Outcome::Answer(answer),
            Err(rejection) => Outcome::Failure(rejection.into_failure(job, 1)),
        },
    )
}
