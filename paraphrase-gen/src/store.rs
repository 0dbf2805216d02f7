//! The durable record of a run: every answer is appended to `answers.jsonl` (and fsynced) as
//! it arrives, keyed by pair id and prompt-set hash, so a rerun after a crash or a kill sends
//! no request whose answer is stored. Failures go to `failures.jsonl` the same way.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One accepted paraphrase, as journalled in `answers.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub key: String,
    pub pair_id: String,
    pub text: String,
    pub model: String,
    pub system_prompt_id: Option<String>,
    pub prompt_id: String,
    pub temperature: f32,
    pub seed: i64,
    /// As the server sent it; `None` when it sent none. (Journals written before this was
    /// optional hold a string, which reads the same.)
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
}

/// Why a row has no paraphrase, for the summary's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// No answer came: HTTP errors after the retries, a `Retry-After` beyond
    /// `--max-retry-wait`, a body that is no chat completion, a batch that ended first.
    #[default]
    Request,
    /// An answer came but cannot be used: empty, truncated, withheld, refused, or only
    /// reasoning.
    Unusable,
    /// The answer shares too few content words with its source (`--min-overlap`).
    LowOverlap,
}

/// One failed row, as journalled in `failures.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub key: String,
    pub pair_id: String,
    pub error: String,
    pub attempts: u32,
    #[serde(default)]
    pub kind: FailureKind,
    /// The answer that was not taken, when there was one, for inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Failure {
    /// A failure with no answer to keep.
    pub fn request(key: &str, pair_id: &str, error: String, attempts: u32) -> Self {
        Failure {
            key: key.into(),
            pair_id: pair_id.into(),
            error,
            attempts,
            kind: FailureKind::Request,
            text: None,
        }
    }
}

pub fn answer_key(pair_id: &str, prompts_hash: &str) -> String {
    format!("{pair_id}|{prompts_hash}")
}

/// An append-only JSON-lines file.
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
}

impl Journal {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line and makes it durable before returning.
    pub fn append<T: Serialize>(&mut self, value: &T) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(value).expect("record serializes");
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()
    }
}

/// Stored answers by key. A torn last line (a kill mid-write) is ignored: that answer is
/// simply requested again.
pub fn load_answers(path: &Path) -> std::io::Result<HashMap<String, Answer>> {
    let mut answers = HashMap::new();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(answers),
        Err(e) => return Err(e),
    };
    for line in std::io::BufReader::new(file).lines() {
        if let Ok(answer) = serde_json::from_str::<Answer>(&line?) {
            answers.insert(answer.key.clone(), answer);
        }
    }
    Ok(answers)
}
