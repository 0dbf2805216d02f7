//! Training data: pairs Parquet (from select-pairs/paraphrase-gen), QA-style JSONL, and
//! scored pairs (CSV or Parquet) for CoSENT. Every text must be present and non-blank; a
//! problem is reported with its file and row before any training starts.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use common::tables::PairsReader;

use crate::Error;

/// An (anchor, positive[, negative]) example for MNRL.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub anchor: String,
    pub positive: String,
    pub negative: Option<String>,
}

/// A (sentence1, sentence2, score in [0, 1]) example for CoSENT.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub sentence1: String,
    pub sentence2: String,
    pub score: f32,
}

#[derive(Debug, Clone)]
pub enum Examples {
    Pairs(Vec<Pair>),
    Scored(Vec<Scored>),
}

impl Examples {
    pub fn len(&self) -> usize {
        match self {
            Examples::Pairs(p) => p.len(),
            Examples::Scored(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where training examples come from.
#[derive(Debug, Clone, serde::Serialize)]
pub enum Source {
    /// `pairs` Parquet (anchor, positive, optional negative).
    Pairs(PathBuf),
    /// JSONL with `query`/`anchor`, `positive` and optional `negative` fields.
    Jsonl(PathBuf),
    /// CSV (header sentence1,sentence2,score) or Parquet with those columns.
    Scored(PathBuf),
}

impl Source {
    pub fn path(&self) -> &Path {
        match self {
            Source::Pairs(p) | Source::Jsonl(p) | Source::Scored(p) => p,
        }
    }
}

fn bad(path: &Path, row: u64, reason: impl Into<String>) -> Error {
    Error::Data(format!("{}: row {row}: {}", path.display(), reason.into()))
}

fn text(path: &Path, row: u64, field: &str, value: Option<String>) -> Result<String, Error> {
    match value {
        Some(t) if !t.trim().is_empty() => Ok(t),
        Some(_) => Err(bad(path, row, format!("`{field}` is empty"))),
        None => Err(bad(path, row, format!("`{field}` is missing"))),
    }
}

pub fn load(source: &Source) -> Result<Examples, Error> {
    let examples = match source {
        Source::Pairs(path) => Examples::Pairs(load_pairs(path)?),
        Source::Jsonl(path) => Examples::Pairs(load_jsonl(path)?),
        Source::Scored(path) => Examples::Scored(load_scored(path)?),
    };
    if examples.is_empty() {
        return Err(Error::Data(format!(
            "{}: no training example",
            source.path().display()
        )));
    }
    Ok(examples)
}

fn load_pairs(path: &Path) -> Result<Vec<Pair>, Error> {
    let rows = PairsReader::read_all(path)?;
    // Rows still waiting for paraphrase-gen cannot be trained on: say how many, and where.
    let missing: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.anchor.is_none() || r.positive.is_none())
        .map(|(i, _)| i)
        .collect();
    if let Some(first) = missing.first() {
        return Err(Error::Data(format!(
            "{}: {} of {} pairs still lack their paraphrase (first at row {first}, pair {}); run paraphrase-gen first, or select pairs with --no-paraphrase",
            path.display(),
            missing.len(),
            rows.len(),
            rows[*first].pair_id
        )));
    }
    use common::schema::pairs::{ANCHOR, NEGATIVE, POSITIVE};
    rows.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let row = i as u64;
            Ok(Pair {
                anchor: text(path, row, ANCHOR, r.anchor)?,
                positive: text(path, row, POSITIVE, r.positive)?,
                negative: match r.negative {
                    Some(n) => Some(text(path, row, NEGATIVE, Some(n))?),
                    None => None,
                },
            })
        })
        .collect()
}

fn load_jsonl(path: &Path) -> Result<Vec<Pair>, Error> {
    let file = std::fs::File::open(path).map_err(|e| common::Error::io(path, e))?;
    let mut pairs = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| common::Error::io(path, e))?;
        let row = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| Error::Data(format!("{}:{row}: invalid JSON: {e}", path.display())))?;
        let field = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| value.get(*n).and_then(|v| v.as_str()).map(str::to_string))
        };
        let line_err = |field: &str, what: &str| {
            Error::Data(format!("{}:{row}: `{field}` is {what}", path.display()))
        };
        let get = |names: &[&str]| match field(names) {
            Some(t) if !t.trim().is_empty() => Ok(t),
            Some(_) => Err(line_err(names[0], "empty")),
            None => Err(line_err(names[0], "missing")),
        };
        pairs.push(Pair {
            anchor: get(&["query", "anchor"])?,
            positive: get(&["positive"])?,
            negative: match field(&["negative"]) {
                Some(_) => Some(get(&["negative"])?),
                None => None,
            },
        });
    }
    Ok(pairs)
}

fn check_score(path: &Path, row: u64, score: f32) -> Result<f32, Error> {
    if (0.0..=1.0).contains(&score) {
        Ok(score)
    } else {
        Err(bad(path, row, format!("score {score} is outside [0, 1]")))
    }
}

fn load_scored(path: &Path) -> Result<Vec<Scored>, Error> {
    let is_parquet = path.extension().is_some_and(|e| e == "parquet");
    if is_parquet {
        return load_scored_parquet(path);
    }
    let file = std::fs::File::open(path).map_err(|e| common::Error::io(path, e))?;
    let mut lines = std::io::BufReader::new(file).lines();
    let header = lines
        .next()
        .transpose()
        .map_err(|e| common::Error::io(path, e))?
        .ok_or_else(|| Error::Data(format!("{}: empty file", path.display())))?;
    let columns: Vec<&str> = header
        .trim_end_matches('\r')
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| {
        columns.iter().position(|c| *c == name).ok_or_else(|| {
            Error::Data(format!(
                "{}: no column `{name}` in the header ({header})",
                path.display()
            ))
        })
    };
    use common::schema::scored::{SCORE, SENTENCE1, SENTENCE2};
    let (c1, c2, cs) = (col(SENTENCE1)?, col(SENTENCE2)?, col(SCORE)?);
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|e| common::Error::io(path, e))?;
        let row = i as u64 + 2;
        if line.trim().is_empty() {
            continue;
        }
        let fields = split_csv(&line);
        let get = |c: usize, name: &str| text(path, row, name, fields.get(c).cloned());
        let score: f32 = get(cs, SCORE)?
            .trim()
            .parse()
            .map_err(|_| bad(path, row, format!("`{SCORE}` is not a number")))?;
        out.push(Scored {
            sentence1: get(c1, SENTENCE1)?,
            sentence2: get(c2, SENTENCE2)?,
            score: check_score(path, row, score)?,
        });
    }
    Ok(out)
}

/// One CSV record: comma-separated, fields optionally in double quotes with `""` escapes.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

fn load_scored_parquet(path: &Path) -> Result<Vec<Scored>, Error> {
    use common::parquet_io::{ColumnKind, ColumnSpec, TableReader};
    use common::schema::scored::{SCORE, SENTENCE1, SENTENCE2, TABLE};
    let spec = |name, kind| ColumnSpec {
        name,
        kind,
        optional: false,
    };
    let specs = [
        spec(SENTENCE1, ColumnKind::Utf8),
        spec(SENTENCE2, ColumnKind::Utf8),
        spec(SCORE, ColumnKind::Float32),
    ];
    let mut reader = TableReader::open(path, TABLE, &specs)?;
    let mut out = Vec::new();
    while let Some(b) = reader.next_batch()? {
        for i in 0..b.len() {
            let score = b
                .opt_f32(SCORE, i)
                .ok_or_else(|| b.bad_value(i, SCORE, "null value"))?;
            out.push(Scored {
                sentence1: b.text(SENTENCE1, i)?.to_string(),
                sentence2: b.text(SENTENCE2, i)?.to_string(),
                score: check_score(path, b.file_row(i), score)?,
            });
        }
    }
    Ok(out)
}

/// The document of each example, when the source records one (pairs Parquet's `doc_id`), for
/// the document split.
pub fn doc_ids(source: &Source) -> Result<Option<Vec<String>>, Error> {
    Ok(match source {
        Source::Pairs(path) => Some(
            PairsReader::read_all(path)?
                .into_iter()
                .map(|r| r.doc_id)
                .collect(),
        ),
        Source::Jsonl(_) | Source::Scored(_) => None,
    })
}
