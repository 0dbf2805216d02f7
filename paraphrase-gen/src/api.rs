//! Talking to an OpenAI-compatible server through async-openai, with one retry policy we
//! control: async-openai's built-in retry hides `Retry-After` and does not retry timeouts or
//! malformed bodies, so its HTTP service is replaced by one that turns 429 and 5xx answers
//! into a [`RetryableStatus`] error, and [`with_retries`] retries that, timeouts, connection
//! errors and undecodable bodies with exponential backoff and jitter, waiting at least what
//! `Retry-After` asks. 400, 401, 403 and 404 are not retried: they end the run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_openai::Client;
use rand::Rng;

/// Connection settings. The key is never printed: `Debug` hides it.
#[derive(Clone)]
pub struct ApiConfig {
    pub base_url: String,
    pub api_key: String,
    pub timeout: Duration,
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<hidden>")
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

/// A 429 or 5xx answer, with the server's `Retry-After` if it sent one.
#[derive(Debug)]
pub struct RetryableStatus {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: String,
}

impl std::fmt::Display for RetryableStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body: String = self.body.chars().take(200).collect();
        write!(f, "HTTP {}: {body}", self.status)
    }
}

impl std::error::Error for RetryableStatus {}

fn parse_retry_after(value: &str) -> Option<Duration> {
    // Seconds (possibly fractional); the HTTP-date form is rare from APIs and not handled.
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// An async-openai client whose HTTP layer reports 429/5xx as [`RetryableStatus`].
pub fn client(config: &ApiConfig) -> Result<Client<OpenAIConfig>, String> {
    let http = reqwest::Client::builder()
        .timeout(config.timeout)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let service = tower::service_fn(move |factory: HttpRequestFactory| {
        let http = http.clone();
        async move {
            let request = factory.build().await?;
            let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
            let status = response.status();
            if status.as_u16() == 429 || status.is_server_error() {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let body = response.text().await.unwrap_or_default();
                let error = RetryableStatus {
                    status: status.as_u16(),
                    retry_after,
                    body,
                };
                return Err(OpenAIError::Boxed(Box::new(error)));
            }
            Ok::<_, OpenAIError>(response)
        }
    });
    let openai = OpenAIConfig::new()
        .with_api_base(config.base_url.trim_end_matches('/'))
        .with_api_key(config.api_key.clone());
    Ok(Client::with_config(openai).with_http_service(service))
}

/// Why a call did not succeed.
#[derive(Debug)]
pub enum CallError {
    /// Retrying cannot help and no later request will fare better (bad request, bad key,
    /// unknown model or endpoint): the run stops.
    Fatal(String),
    /// This request failed after its retries.
    Failed { error: String, attempts: u32 },
}

/// Retries and waits, for the summary and the tests.
#[derive(Debug, Default)]
pub struct RetryStats {
    pub retries: AtomicU64,
    pub waited_ms: AtomicU64,
}

enum Verdict {
    Retry(Option<Duration>),
    Fatal,
    Fail,
}

fn classify(error: &OpenAIError) -> Verdict {
    match error {
        OpenAIError::Boxed(b) => match b.downcast_ref::<RetryableStatus>() {
            Some(s) => Verdict::Retry(s.retry_after),
            None => Verdict::Fail,
        },
        OpenAIError::Reqwest(e)
            if e.is_timeout() || e.is_connect() || e.is_body() || e.is_decode() =>
        {
            Verdict::Retry(None)
        }
        OpenAIError::Reqwest(_) => Verdict::Retry(None),
        // A 200 with a body that is not the expected JSON: a flaky proxy or server; retry.
        OpenAIError::JSONDeserialize(..) => Verdict::Retry(None),
        OpenAIError::ApiError(e) => match e.status_code.as_u16() {
            400 | 401 | 403 | 404 => Verdict::Fatal,
            _ => Verdict::Fail,
        },
        _ => Verdict::Fail,
    }
}

/// Exponential backoff with full jitter in [½, 1] of the step, capped.
fn backoff(config: &ApiConfig, attempt: u32) -> Duration {
    let step = config
        .initial_backoff
        .saturating_mul(1u32 << attempt.min(16));
    let step = step.min(config.max_backoff);
    step.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// Runs `call` until it succeeds, fails for good, or runs out of retries.
pub async fn with_retries<T, F, Fut>(
    config: &ApiConfig,
    stats: &Arc<RetryStats>,
    mut call: F,
) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, OpenAIError>>,
{
    let mut attempt = 0u32;
    loop {
        let error = match call().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let wait = match classify(&error) {
            Verdict::Fatal => return Err(CallError::Fatal(error.to_string())),
            Verdict::Fail => {
                return Err(CallError::Failed {
                    error: error.to_string(),
                    attempts: attempt + 1,
                })
            }
            Verdict::Retry(_) if attempt >= config.max_retries => {
                return Err(CallError::Failed {
                    error: error.to_string(),
                    attempts: attempt + 1,
                })
            }
            Verdict::Retry(retry_after) => {
                backoff(config, attempt).max(retry_after.unwrap_or_default())
            }
        };
        tracing::debug!("retrying in {wait:?} after: {error}");
        stats.retries.fetch_add(1, Ordering::Relaxed);
        stats
            .waited_ms
            .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// Spaces requests so that at most `rpm` requests and `tpm` (estimated) tokens start per
/// minute: each request reserves its slot in time, and waits until then.
pub struct RateLimiter {
    state: tokio::sync::Mutex<(tokio::time::Instant, tokio::time::Instant)>,
    rpm: Option<f64>,
    tpm: Option<f64>,
}

impl RateLimiter {
    pub fn new(rpm: Option<u32>, tpm: Option<u32>) -> Self {
        let now = tokio::time::Instant::now();
        RateLimiter {
            state: tokio::sync::Mutex::new((now, now)),
            rpm: rpm.map(f64::from),
            tpm: tpm.map(f64::from),
        }
    }

    pub async fn acquire(&self, tokens: u32) {
        let start = {
            let mut s = self.state.lock().await;
            let now = tokio::time::Instant::now();
            let start = now.max(s.0).max(s.1);
            if let Some(rpm) = self.rpm {
                s.0 = start + Duration::from_secs_f64(60.0 / rpm);
            }
            if let Some(tpm) = self.tpm {
                s.1 = start + Duration::from_secs_f64(60.0 * tokens as f64 / tpm);
            }
            start
        };
        tokio::time::sleep_until(start).await;
    }
}
