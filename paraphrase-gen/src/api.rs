//! Talking to an OpenAI-compatible server through async-openai, with one retry policy we
//! control: async-openai's built-in retry hides `Retry-After` and does not retry timeouts or
//! malformed bodies, so its HTTP service is replaced by one that turns 429 and 5xx answers
//! into a [`RetryableStatus`] error, and [`with_retries`] retries that, timeouts and connection
//! errors with exponential backoff and jitter, waiting at least what `Retry-After` asks, up to
//! `max_retry_wait`: a longer requested wait fails the request at once (a daily quota would
//! otherwise put the run to sleep for a day). A 200 whose body is not JSON is retried once
//! only, since every retry may be a paid generation. 400, 401, 403 and 404 are not retried:
//! they end the run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    /// Longest `Retry-After` honoured; a server asking for more fails the request at once.
    pub max_retry_wait: Duration,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<hidden>")
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("max_retry_wait", &self.max_retry_wait)
            .finish()
    }
}

/// A `Retry-After` header: its text as sent, and the wait it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryAfter {
    /// The header value verbatim, for messages.
    pub header: String,
    /// Seconds asked for, ≥ 0; may be more than a `Duration` holds (`1e20`, `inf`).
    pub seconds: f64,
}

/// A 429 or 5xx answer, with the server's `Retry-After` if it sent one in a form HTTP allows.
#[derive(Debug)]
pub struct RetryableStatus {
    pub status: u16,
    pub retry_after: Option<RetryAfter>,
    pub body: String,
}

impl std::fmt::Display for RetryableStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body: String = self.body.chars().take(200).collect();
        write!(f, "HTTP {}: {body}", self.status)
    }
}

impl std::error::Error for RetryableStatus {}

/// The wait in seconds a `Retry-After` value asks for, in either form RFC 9110 §10.2.3
/// allows: delay-seconds (fractional too, as some servers send) or an HTTP-date in any of its
/// three formats (IMF-fixdate, RFC 850, asctime; parsed by `httpdate`), counted from `now`; a
/// date in the past asks for no wait. `None` for anything else (negative, NaN, no number or
/// date), so the plain backoff applies. Never panics, whatever the size of the number.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<f64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        // NaN and negative numbers fail the comparison; +inf stays (longer than any cap).
        return (seconds >= 0.0).then_some(seconds);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).map_or(0.0, |d| d.as_secs_f64()))
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
                    .and_then(|v| {
                        let seconds = parse_retry_after(v, SystemTime::now())?;
                        Some(RetryAfter {
                            header: v.to_string(),
                            seconds,
                        })
                    });
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
    Retry(Option<RetryAfter>),
    /// Retried once only: a 200 whose body is not JSON may have been a paid generation.
    RetryOnce,
    Fatal,
    Fail,
}

fn classify(error: &OpenAIError) -> Verdict {
    match error {
        OpenAIError::Boxed(b) => match b.downcast_ref::<RetryableStatus>() {
            Some(s) => Verdict::Retry(s.retry_after.clone()),
            None => Verdict::Fail,
        },
        OpenAIError::Reqwest(e)
            if e.is_timeout() || e.is_connect() || e.is_body() || e.is_decode() =>
        {
            Verdict::Retry(None)
        }
        OpenAIError::Reqwest(_) => Verdict::Retry(None),
        // A 200 with a body that is not JSON: a flaky proxy cut it, or the server is broken.
        OpenAIError::JSONDeserialize(..) => Verdict::RetryOnce,
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

/// Runs `call` until it succeeds, fails for good, or runs out of retries. Fails at once when
/// the server asks for a wait longer than `config.max_retry_wait`, naming that wait.
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
    let mut undecodable = 0u32;
    loop {
        let error = match call().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let failed = |error: String| CallError::Failed {
            error,
            attempts: attempt + 1,
        };
        let max_wait = config.max_retry_wait.as_secs_f64();
        let wait = match classify(&error) {
            Verdict::Fatal => return Err(CallError::Fatal(error.to_string())),
            Verdict::Fail => return Err(failed(error.to_string())),
            Verdict::Retry(Some(r)) if r.seconds > max_wait => {
                return Err(failed(format!(
                    "the server asked to wait {:.0} s (Retry-After: {}), more than --max-retry-wait {max_wait} s; {error}",
                    r.seconds, r.header
                )))
            }
            Verdict::RetryOnce if undecodable >= 1 => {
                return Err(failed(format!("{error} (again after one retry)")))
            }
            Verdict::Retry(_) | Verdict::RetryOnce if attempt >= config.max_retries => {
                return Err(failed(error.to_string()))
            }
            Verdict::RetryOnce => {
                undecodable += 1;
                backoff(config, attempt)
            }
            // Within the cap, so the seconds fit a Duration.
            Verdict::Retry(retry_after) => backoff(config, attempt).max(Duration::from_secs_f64(
                retry_after.map_or(0.0, |r| r.seconds),
            )),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_every_form_http_allows() {
        // 1994-11-06 08:49:37 UTC, the RFC's example date.
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let before = date - Duration::from_secs(90);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",  // IMF-fixdate
            "Sunday, 06-Nov-94 08:49:37 GMT", // obsolete RFC 850
            "Sun Nov  6 08:49:37 1994",       // obsolete asctime
        ] {
            assert_eq!(parse_retry_after(form, before), Some(90.0), "{form}");
            assert_eq!(
                parse_retry_after(form, date + Duration::from_secs(5)),
                Some(0.0)
            );
        }
        assert_eq!(parse_retry_after(" 120 ", date), Some(120.0));
        assert_eq!(parse_retry_after("0.25", date), Some(0.25));
        assert_eq!(parse_retry_after("1e20", date), Some(1e20));
        assert!(parse_retry_after("99999999999999999999999999", date).is_some_and(|s| s > 1e25));
        assert_eq!(parse_retry_after("inf", date), Some(f64::INFINITY));
        for bad in ["-1", "NaN", "soon", "", "Sun, 99 Nov 1994 08:49:37 GMT"] {
            assert_eq!(parse_retry_after(bad, date), None, "{bad}");
        }
    }
}
