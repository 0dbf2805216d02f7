//! Batch API mode: the requests go up as one JSONL file, a batch is created, polled until it
//! ends, and its output file is merged. The batch id is saved in `STATE/batch.json` before
//! polling starts, so a rerun after a kill resumes polling instead of paying twice.

use std::collections::HashMap;
use std::path::Path;

use async_openai::types::batches::{
    BatchCompletionWindow, BatchEndpoint, BatchRequest, BatchStatus,
};
use async_openai::types::chat::CreateChatCompletionResponse;
use async_openai::types::files::{CreateFileRequest, FileInput, FilePurpose};
use async_openai::types::InputSource;
use serde::{Deserialize, Serialize};

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
            let mut jsonl = Vec::new();
            for job in &jobs {
                let line = serde_json::json!({"custom_id": job.key, "method": "POST", "url": "/v1/chat/completions", "body": job.request});
                jsonl.extend(serde_json::to_vec(&line).expect("request serializes"));
                jsonl.push(b'\n');
            }
            let upload = CreateFileRequest {
                file: FileInput { source: InputSource::VecU8 { filename: "paraphrase-requests.jsonl".into(), vec: jsonl } },
                purpose: FilePurpose::Batch,
                expires_after: None,
            };
            let file = api::with_retries(&opts.api, &stats, || {
                let (c, u) = (client.clone(), upload.clone());
                async move { c.files().create(u).await }
            })
                .await
                .map_err(api_error("uploading the batch input"))?;
            let request = BatchRequest {
                input_file_id: file.id.clone(),
                endpoint: BatchEndpoint::V1ChatCompletions,
                completion_window: BatchCompletionWindow::W24H,
                metadata: None,
                output_expires_after: None,
            };
            let batch = api::with_retries(&opts.api, &stats, || {
                let (c, r) = (client.clone(), request.clone());
                async move { c.batches().create(r).await }
            })
                .await
                .map_err(api_error("creating the batch"))?;
            let state = BatchState { batch_id: batch.id, input_file_id: file.id };
            common::atomic::write_atomic(&state_path, &serde_json::to_vec_pretty(&state).expect("state serializes"))?;
            tracing::info!("created batch {} ({} requests)", state.batch_id, jobs.len());
            state
        };

        let batch = loop {
            let batch = api::with_retries(&opts.api, &stats, || {
                let (c, id) = (client.clone(), state.batch_id.clone());
                async move { c.batches().retrieve(&id).await }
            })
                .await
                .map_err(api_error("polling the batch"))?;
            match batch.status {
                BatchStatus::Completed => break batch,
                BatchStatus::Failed | BatchStatus::Expired | BatchStatus::Cancelled | BatchStatus::Cancelling => {
                    // A dead batch cannot be resumed: forget it so the next run submits anew.
                    let _ = std::fs::remove_file(&state_path);
                    return Err(Error::Invalid(format!("batch {} ended as {:?}", state.batch_id, batch.status)));
                }
                _ => tokio::time::sleep(opts.poll_interval).await,
            }
        };

        let mut outcomes = Vec::new();
        for file_id in [batch.output_file_id.as_ref(), batch.error_file_id.as_ref()].into_iter().flatten() {
            let bytes = api::with_retries(&opts.api, &stats, || {
                let (c, id) = (client.clone(), file_id.clone());
                async move { c.files().content(&id).await }
            })
                .await
                .map_err(api_error("downloading the batch results"))?;
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                outcomes.push(parse_result_line(line, &by_key, &opts.model));
            }
        }
        Ok(outcomes.into_iter().flatten().collect())
    })
}

/// One line of a batch output or error file.
fn parse_result_line(line: &[u8], jobs: &HashMap<String, Job>, model: &str) -> Option<Outcome> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let job = jobs.get(value["custom_id"].as_str()?)?;
    let fail = |error: String| {
        Outcome::Failure(Failure {
            key: job.key.clone(),
            pair_id: job.pair_id.clone(),
            error,
            attempts: 1,
        })
    };
    let status = value["response"]["status_code"].as_u64().unwrap_or(0);
    if status != 200 {
        let message = value["error"]["message"]
            .as_str()
            .or(value["response"]["body"]["error"]["message"].as_str());
        return Some(fail(format!(
            "batch request failed (status {status}): {}",
            message.unwrap_or("no message")
        )));
    }
    Some(
        match serde_json::from_value::<CreateChatCompletionResponse>(
            value["response"]["body"].clone(),
        ) {
            Ok(response) => match to_answer(job, model, &response) {
                Ok(answer) => Outcome::Answer(answer),
                Err(e) => fail(e),
            },
            Err(e) => fail(format!("undecodable batch response: {e}")),
        },
    )
}
