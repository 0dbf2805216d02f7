use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use paraphrase_gen::api::ApiConfig;
use paraphrase_gen::prompts::PromptSet;
use paraphrase_gen::{run, Options};

/// Fill the paraphrase-flagged pairs of a `pairs` file through an OpenAI-compatible chat API.
///
/// single-synthetic pairs get their empty side written as a paraphrase of the other side;
/// synthetic-pair pairs get their flagged side replaced by a paraphrase of itself. Each request
/// draws one of the prompts (default: the reference workflow's "condense/paraphrase in 4-5
/// sentences" and "… in 2-3 sentences") and a temperature in [0.5, 0.7], from a seed per pair.
/// Prompt ids, model, temperature, seed, finish reason and token usage are recorded per row.
///
/// Works with OpenAI and with vLLM, llama.cpp's server, Ollama or any proxy that speaks the
/// chat-completions API (--base-url). The key comes from OPENAI_API_KEY or --api-key-file and is
/// never printed or written anywhere.
///
/// Answers are read leniently: any finish reason the server sends (TGI's and sglang's
/// "eos_token" too) is taken and recorded verbatim in para_finish_reason; missing optional
/// fields (id, usage, …) are fine. Reasoning left in the content (<think>…</think>, gpt-oss's
/// analysis channel) is cut away; only the answer after it is kept.
///
/// Answers are appended to STATE/answers.jsonl as they arrive: after a crash or a kill, rerun
/// the same command and only the missing paraphrases are requested. Failures go to
/// STATE/failures.jsonl, one line per failed pair with its kind: "request" (no answer after the
/// retries, a Retry-After beyond --max-retry-wait, a 200 body that is no chat completion even
/// after one retry, a batch that ended before the request), "unusable" (empty, truncated,
/// withheld, refused, or only reasoning) or "low_overlap" (see --min-overlap; the answer is
/// kept in the line's "text"). Those pairs are left out of the output, and the run fails if
/// there are more than --max-failures of them.
#[derive(Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// `pairs` Parquet file from select-pairs.
    #[arg(long)]
    pairs: PathBuf,
    /// Output `pairs` Parquet file.
    #[arg(long, short)]
    out: PathBuf,
    /// Folder for answers.jsonl, failures.jsonl and batch state [default: OUT.state].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// API base URL (ending in /v1 for most servers).
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    base_url: String,
    /// Model name as the server knows it.
    #[arg(long, default_value = "gpt-4o-mini")]
    model: String,
    /// File holding the API key (must not be readable by others) [default: $OPENAI_API_KEY].
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Prompts (TOML or JSON; see `--print-default-prompts`).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Print the built-in prompts file and exit.
    #[arg(long)]
    print_default_prompts: bool,
    /// Seed of the prompt and temperature draws (and of the request `seed`).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    max_in_flight: usize,
    /// Requests per minute at most.
    #[arg(long)]
    rpm: Option<u32>,
    /// Tokens per minute at most (estimated: prompt characters / 4 + max_tokens).
    #[arg(long)]
    tpm: Option<u32>,
    /// Seconds before a request times out (and is retried).
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Retries of a request on 429, 5xx and timeouts (a 200 whose body is not JSON is retried
    /// once only: it may have been a paid generation).
    #[arg(long, default_value_t = 6)]
    max_retries: u32,
    /// First backoff in seconds (doubles each retry, with jitter; at least Retry-After).
    #[arg(long, default_value_t = 1.0)]
    initial_backoff: f64,
    /// Longest Retry-After honoured, in seconds (either HTTP form: seconds or a date). A server
    /// asking for a longer wait (a daily quota) fails that request at once, with the wait it
    /// asked for in failures.jsonl, instead of putting the run to sleep.
    #[arg(long, default_value_t = 300.0)]
    max_retry_wait: f64,
    /// Longest backoff in seconds.
    #[arg(long, default_value_t = 60.0)]
    max_backoff: f64,
    /// Fail (exit 1) if more paraphrases than this fail.
    #[arg(long, default_value_t = 0)]
    max_failures: usize,
    /// Count requests and estimate tokens and cost; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Price per 1,000 prompt tokens, for --dry-run.
    #[arg(long, default_value_t = 0.00015)]
    price_prompt: f64,
    /// Price per 1,000 completion tokens, for --dry-run.
    #[arg(long, default_value_t = 0.0006)]
    price_completion: f64,
    /// Use the Batch API (cheaper, asynchronous): upload, create, poll, merge.
    #[arg(long)]
    batch: bool,
    /// Seconds between polls of a batch.
    #[arg(long, default_value_t = 30.0)]
    poll_interval: f64,
    /// Least share of an answer's content words that must occur in the passage it paraphrases;
    /// answers below it (small models sometimes describe the passage, "The passage is condensed
    /// and rephrased to…", instead of paraphrasing it) are failures of kind "low_overlap".
    /// Content words: split at non-alphanumerics, lowercased, English stopwords and words under
    /// 3 characters dropped, cut to 6 characters. Deterministic. 0 turns the check off (the
    /// reference workflow had none).
    #[arg(long, default_value_t = 0.3)]
    min_overlap: f64,
}

/// A duration option in seconds; negative, NaN or huge values are bad input, not a panic.
fn seconds(option: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("--{option} {value} is not a number of seconds ≥ 0"))
}

fn read_key(file: Option<&PathBuf>) -> Result<String, String> {
    let Some(path) = file else {
        return std::env::var("OPENAI_API_KEY")
            .map_err(|_| "no API key: set OPENAI_API_KEY or give --api-key-file".to_string());
    };
    common::provenance::check_private_file(path).map_err(|e| format!("key file {e}"))?;
    // Notepad and PowerShell save UTF-8 with a byte-order mark.
    let key = common::text::read_to_string(path).map_err(|e| e.to_string())?;
    Ok(key.trim().to_string())
}

fn main() -> ExitCode {
    common::progress::init_logging();
    let a = Args::parse();
    if a.print_default_prompts {
        print!("{}", paraphrase_gen::prompts::DEFAULT_PROMPTS);
        return ExitCode::SUCCESS;
    }
    let prompts = match &a.prompts {
        Some(p) => PromptSet::load(p),
        None => Ok(PromptSet::default_set()),
    };
    // A dry run needs no key.
    let key = if a.dry_run {
        Ok(read_key(a.api_key_file.as_ref()).unwrap_or_default())
    } else {
        read_key(a.api_key_file.as_ref())
    };
    let durations = (|| {
        Ok::<_, String>([
            seconds("timeout", a.timeout)?,
            seconds("initial-backoff", a.initial_backoff)?,
            seconds("max-backoff", a.max_backoff)?,
            seconds("max-retry-wait", a.max_retry_wait)?,
            seconds("poll-interval", a.poll_interval)?,
        ])
    })();
    let (prompts, api_key, durations) = match (prompts, key, durations) {
        (Ok(p), Ok(k), Ok(d)) => (p, k, d),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let [timeout, initial_backoff, max_backoff, max_retry_wait, poll_interval] = durations;
    let opts = Options {
        input: a.pairs,
        out: a.out,
        state_dir: a.state_dir,
        api: ApiConfig {
            base_url: a.base_url,
            api_key,
            timeout,
            max_retries: a.max_retries,
            initial_backoff,
            max_backoff,
            max_retry_wait,
        },
        model: a.model,
        prompts,
        seed: a.seed,
        max_in_flight: a.max_in_flight,
        rpm: a.rpm,
        tpm: a.tpm,
        max_failures: a.max_failures,
        dry_run: a.dry_run,
        price_per_1k: (a.price_prompt, a.price_completion),
        batch: a.batch,
        poll_interval,
        min_overlap: a.min_overlap,
    };
    match run(&opts) {
        Ok(r) if opts.dry_run => {
            eprintln!(
                "dry run: {} flagged pairs, {} already answered, {} requests to send; ~{} prompt + ≤{} completion tokens, ≈ {:.2} at the given prices",
                r.flagged, r.already_stored, r.flagged - r.already_stored, r.estimated_prompt_tokens, r.estimated_completion_tokens, r.estimated_cost
            );
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!(
                "{} of {} flagged pairs paraphrased ({} from earlier runs, {} requests, {} retries, {:.1} requests/s, {} + {} tokens); {} failed ({} answers unusable, {} answers rejected by the overlap check) → {}",
                r.answered, r.flagged, r.already_stored, r.requested, r.retries, r.requests_per_second, r.prompt_tokens, r.completion_tokens, r.failed,
                r.unusable, r.low_overlap,
                r.output.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_bad_input() { 2 } else { 1 })
        }
    }
}
