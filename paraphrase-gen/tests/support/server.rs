//! A local OpenAI-compatible server for the tests and the benchmark: chat completions, file
//! upload/content and batches, on 127.0.0.1, with scripted faults and a request log.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub const KEY: &str = "sk-test-0123456789";

/// What the next chat request gets instead of a good answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// An error status, with a `Retry-After` header sent verbatim when given.
    Status {
        code: u16,
        retry_after: Option<String>,
    },
    Malformed,
    Slow(Duration),
    Empty,
    Truncated,
    /// A good answer in the shape TGI and sglang send: `finish_reason: "eos_token"`, and no
    /// `id`, `object`, `created`, `usage`, `logprobs` or `refusal`.
    Tgi,
    /// A 200 whose JSON holds no answer (`"choices": []`).
    NoChoices,
    /// A good answer after a `<think>…</think>` block, as a reasoning model served without a
    /// reasoning parser sends it.
    Think,
    /// The same in gpt-oss's harmony format, analysis channel then final channel.
    Harmony,
    /// Only a reasoning block: the model never got to the answer.
    ThinkOnly,
    /// An answer that describes the passage instead of paraphrasing it (seen from small local
    /// models).
    Describe,
}

/// How a batch ends when it is polled after `polls_until_done`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum BatchEnd {
    /// Every request answered.
    #[default]
    Completed,
    /// `status` ("expired", "cancelled", "failed") after answering the first `answered`
    /// requests; the others are in the error file, as OpenAI writes them.
    Partial {
        status: &'static str,
        answered: usize,
    },
    /// "failed" at validation: no output or error file, only the batch's `errors`.
    Invalid,
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub passage: String,
    pub status: u16,
}

#[derive(Default)]
pub struct Inner {
    pub faults: VecDeque<Fault>,
    /// What every request gets once `faults` is empty (none: a good answer).
    pub always: Option<Fault>,
    pub latency: Duration,
    pub log: Vec<Logged>,
    pub files: HashMap<String, Vec<u8>>,
    pub batches: HashMap<String, (String, u32)>, // id → (input file, polls so far)
    pub uploads: u32,
    /// Requests in each uploaded batch input file, in upload order.
    pub uploaded_requests: Vec<usize>,
    pub batch_end: BatchEnd,
    pub batches_created: u32,
    /// Polls a batch stays in_progress before it completes.
    pub polls_until_done: u32,
    /// Passages whose answer is empty (a failure the client must record).
    pub empty_for: Vec<String>,
}

#[derive(Clone, Default)]
pub struct Server {
    pub inner: Arc<Mutex<Inner>>,
    pub url: String,
}

/// The passage token (`P0042`) in a prompt, which the tests use to name pairs.
pub fn passage_of(text: &str) -> String {
    text.split_whitespace()
        .find(|w| w.len() == 5 && w.starts_with('P') && w[1..].chars().all(|c| c.is_ascii_digit()))
        .unwrap_or("?")
        .to_string()
}

fn answer(body: &Value, content: &str, finish: &str) -> Value {
    json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0,
        "model": body["model"].as_str().unwrap_or("test-model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish, "logprobs": null}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}
    })
}

/// The deterministic good answer for a request: it names the passage token and the
/// temperature sent, and repeats the passage (the last paragraph of the prompt), so it shares
/// most of its content words with the source as a faithful paraphrase does.
fn paraphrase(body: &Value) -> (String, String) {
    let prompt = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    let passage = passage_of(&prompt);
    let t = body["temperature"].as_f64().unwrap_or(1.0);
    let source = prompt.rsplit("\n\n").next().unwrap_or("");
    (
        passage.clone(),
        format!("A paraphrase of {passage} at temperature {t:.3}: {source}"),
    )
}

/// What a small model answered instead of a paraphrase (issue 17, SmolLM2-135M).
pub const DESCRIPTION: &str =
    "The passage is condensed and rephrased to provide a concise summary of its main points.";

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {KEY}"))
}

fn unauthorized() -> Response {
    let body = json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

async fn chat(State(s): State<Server>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let (passage, text) = paraphrase(&body);
    let (fault, latency, empty) = {
        let mut g = s.inner.lock().unwrap();
        let fault = g.faults.pop_front().or_else(|| g.always.clone());
        (fault, g.latency, g.empty_for.contains(&passage))
    };
    let log = |status: u16| {
        s.inner.lock().unwrap().log.push(Logged {
            passage: passage.clone(),
            status,
        })
    };
    if !authorized(&headers) {
        log(401);
        return unauthorized();
    }
    tokio::time::sleep(latency).await;
    match fault {
        Some(Fault::Status { code, retry_after }) => {
            log(code);
            let mut r = (StatusCode::from_u16(code).unwrap(), Json(json!({"error": {"message": "try later", "type": "rate_limit_error", "param": null, "code": null}}))).into_response();
            if let Some(v) = retry_after {
                r.headers_mut().insert("retry-after", v.parse().unwrap());
            }
            r
        }
        Some(Fault::Malformed) => {
            log(200);
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                "{\"choices\": [",
            )
                .into_response()
        }
        Some(Fault::Slow(d)) => {
            log(200); // on arrival: the client gives up before the answer comes
            tokio::time::sleep(d).await;
            Json(answer(&body, &text, "stop")).into_response()
        }
        Some(Fault::Empty) => {
            log(200);
            Json(answer(&body, "", "stop")).into_response()
        }
        Some(Fault::Truncated) => {
            log(200);
            Json(answer(&body, &text, "length")).into_response()
        }
        Some(Fault::Tgi) => {
            log(200);
            let body = json!({
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "eos_token"}],
            });
            Json(body).into_response()
        }
        Some(Fault::NoChoices) => {
            log(200);
            Json(json!({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}))
                .into_response()
        }
        Some(Fault::Think) => {
            log(200);
            let content = format!("<think>\nThe user wants a paraphrase of {passage}. Let me keep the names.\n</think>\n\n{text}");
            Json(answer(&body, &content, "stop")).into_response()
        }
        Some(Fault::Harmony) => {
            log(200);
            let content = format!("<|channel|>analysis<|message|>Paraphrase {passage}, keep the names.<|end|><|start|>assistant<|channel|>final<|message|>{text}<|return|>");
            Json(answer(&body, &content, "stop")).into_response()
        }
        Some(Fault::ThinkOnly) => {
            log(200);
            let content = format!("<think>\nThe user wants a paraphrase of {passage}. First, ");
            Json(answer(&body, &content, "stop")).into_response()
        }
        Some(Fault::Describe) => {
            log(200);
            Json(answer(&body, DESCRIPTION, "stop")).into_response()
        }
        None if empty => {
            log(200);
            Json(answer(&body, "  ", "stop")).into_response()
        }
        None => {
            log(200);
            Json(answer(&body, &text, "stop")).into_response()
        }
    }
}

async fn upload(State(s): State<Server>, headers: HeaderMap, mut form: Multipart) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let mut bytes = Vec::new();
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some("file") {
            bytes = field.bytes().await.unwrap().to_vec();
        }
    }
    let mut g = s.inner.lock().unwrap();
    g.uploads += 1;
    let requests = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    g.uploaded_requests.push(requests);
    let id = format!("file-{}", g.files.len() + 1);
    let len = bytes.len();
    g.files.insert(id.clone(), bytes);
    Json(json!({"id": id, "object": "file", "bytes": len, "created_at": 0, "filename": "input.jsonl", "purpose": "batch"})).into_response()
}

async fn content(State(s): State<Server>, Path(id): Path<String>) -> Response {
    match s.inner.lock().unwrap().files.get(&id) {
        Some(b) => b.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn batch_json(id: &str, input: &str, status: &str, output: Option<&str>) -> Value {
    json!({"id": id, "object": "batch", "endpoint": "/v1/chat/completions", "input_file_id": input,
           "completion_window": "24h", "status": status, "output_file_id": output, "created_at": 0})
}

async fn create_batch(
    State(s): State<Server>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let mut g = s.inner.lock().unwrap();
    g.batches_created += 1;
    let id = format!("batch-{}", g.batches.len() + 1);
    let input = body["input_file_id"].as_str().unwrap_or("").to_string();
    g.batches.insert(id.clone(), (input.clone(), 0));
    Json(batch_json(&id, &input, "validating", None)).into_response()
}

async fn get_batch(State(s): State<Server>, Path(id): Path<String>) -> Response {
    let mut g = s.inner.lock().unwrap();
    let until = g.polls_until_done;
    let Some((input, polls)) = g.batches.get_mut(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    *polls += 1;
    let (input, polls) = (input.clone(), *polls);
    if polls <= until {
        return Json(batch_json(&id, &input, "in_progress", None)).into_response();
    }
    // Done: answer the requests the batch got to; the others go to the error file.
    let (status, answered) = match g.batch_end {
        BatchEnd::Completed => ("completed", usize::MAX),
        BatchEnd::Partial { status, answered } => (status, answered),
        BatchEnd::Invalid => {
            let mut b = batch_json(&id, &input, "failed", None);
            b["errors"] = json!({"object": "list", "data": [{"code": "model_not_found", "message": "The model `nope` does not exist.", "param": "body.model", "line": 1}]});
            return Json(b).into_response();
        }
    };
    let requests = String::from_utf8(g.files[&input].clone()).unwrap();
    let (mut out, mut errors) = (String::new(), String::new());
    for (i, line) in requests.lines().enumerate() {
        let req: Value = serde_json::from_str(line).unwrap();
        if i >= answered {
            let code = format!("batch_{status}");
            let line = json!({"id": "r", "custom_id": req["custom_id"], "response": null,
                "error": {"code": code, "message": "This request could not be executed before the batch ended."}});
            errors += &format!("{line}\n");
            continue;
        }
        let (passage, text) = paraphrase(&req["body"]);
        g.log.push(Logged {
            passage,
            status: 200,
        });
        let line = json!({"id": "r", "custom_id": req["custom_id"], "response": {"status_code": 200, "body": answer(&req["body"], &text, "stop")}, "error": null});
        out += &format!("{line}\n");
    }
    let out_id = format!("file-out-{id}");
    g.files.insert(out_id.clone(), out.into_bytes());
    let mut b = batch_json(&id, &input, status, Some(&out_id));
    if !errors.is_empty() {
        let err_id = format!("file-err-{id}");
        g.files.insert(err_id.clone(), errors.into_bytes());
        b["error_file_id"] = json!(err_id);
    }
    Json(b).into_response()
}

impl Server {
    /// Starts on a free loopback port, in a thread of its own.
    pub fn start() -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let server = Server {
            inner: Arc::default(),
            url: format!("http://{}/v1", listener.local_addr().unwrap()),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/files", post(upload))
            .route("/v1/files/{id}/content", get(content))
            .route("/v1/batches", post(create_batch))
            .route("/v1/batches/{id}", get(get_batch))
            .with_state(server.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        server
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }
}
