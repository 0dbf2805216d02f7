//! Training data: pairs Parquet (from select-pairs/paraphrase-gen), QA-style JSONL, and
//! scored pairs (CSV or Parquet) for CoSENT. Every text must be present and non-blank; a
//! problem is reported with its file and row before any training starts. Text files may
//! start with a UTF-8 byte-order mark; CSV is RFC 4180 (quoted fields may hold commas, quotes
//! and newlines), and its row numbers count records, the header being row 1.

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
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `pairs` Parquet (anchor, positive, optional negative).
    Pairs(PathBuf),
    /// JSONL, one object per line, with the fields [`JsonlFields`] names.
    Jsonl(PathBuf, JsonlFields),
    /// CSV (header sentence1,sentence2,score) or Parquet with those columns.
    Scored(PathBuf),
}

impl Source {
    pub fn path(&self) -> &Path {
        match self {
            Source::Pairs(p) | Source::Jsonl(p, _) | Source::Scored(p) => p,
        }
    }
}

/// Field names read from JSONL lines for the two sides of a pair and the optional hard
/// negative. A side without a name takes the first of its common names that a line has
/// (those of sentence-transformers' datasets and of QA/retrieval data, where the context is
/// what the query should find); a line holding two of them is an error, not a guess.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct JsonlFields {
    pub anchor: Option<String>,
    pub positive: Option<String>,
    pub negative: Option<String>,
}

impl JsonlFields {
    /// Common names of the query side, in the order they are looked for.
    pub const ANCHOR_NAMES: [&'static str; 4] = ["query", "anchor", "question", "sentence1"];
    /// Common names of the side the query should find.
    pub const POSITIVE_NAMES: [&'static str; 4] = ["positive", "context", "passage", "sentence2"];
    /// Common names of an optional hard negative.
    pub const NEGATIVE_NAMES: [&'static str; 2] = ["negative", "hard_negative"];
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
        Source::Jsonl(path, fields) => Examples::Pairs(load_jsonl(path, fields)?),
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

fn load_jsonl(path: &Path, fields: &JsonlFields) -> Result<Vec<Pair>, Error> {
    let mut pairs = Vec::new();
    for (i, line) in common::text::open(path)?.lines().enumerate() {
        let line = line.map_err(|e| common::Error::io(path, e))?;
        let row = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| Error::Data(format!("{}:{row}: invalid JSON: {e}", path.display())))?;
        let at = |reason: String| Error::Data(format!("{}:{row}: {reason}", path.display()));
        // The one field of `names` this line has (None if it has none of them).
        let pick = |chosen: &Option<String>, names: &[&str], option: &str| {
            let names: Vec<&str> = match chosen {
                Some(name) => vec![name.as_str()],
                None => names.to_vec(),
            };
            let present: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| value.get(n).is_some_and(|v| !v.is_null()))
                .collect();
            match present.as_slice() {
                [] => Ok(None),
                [name] => match value[name].as_str() {
                    Some(t) if !t.trim().is_empty() => Ok(Some(t.to_string())),
                    Some(_) => Err(at(format!("`{name}` is empty"))),
                    None => Err(at(format!("`{name}` is not a string"))),
                },
                several => Err(at(format!(
                    "has both `{}` and `{}`; choose one with {option}",
                    several[0], several[1]
                ))),
            }
        };
        let required = |chosen: &Option<String>, names: &[&str], option: &str| {
            pick(chosen, names, option)?.ok_or_else(|| {
                let looked: Vec<String> = match chosen {
                    Some(n) => vec![format!("`{n}`")],
                    None => names.iter().map(|n| format!("`{n}`")).collect(),
                };
                at(format!(
                    "no {} field (name it with {option})",
                    looked.join(", ")
                ))
            })
        };
        pairs.push(Pair {
            anchor: required(&fields.anchor, &JsonlFields::ANCHOR_NAMES, "--anchor-field")?,
            positive: required(
                &fields.positive,
                &JsonlFields::POSITIVE_NAMES,
                "--positive-field",
            )?,
            negative: pick(
                &fields.negative,
                &JsonlFields::NEGATIVE_NAMES,
                "--negative-field",
            )?,
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
    let csv_error = |e: csv::Error| {
        let at = e
            .position()
            .map(|p| format!("row {}: ", p.record() + 1))
            .unwrap_or_default();
        match e.into_kind() {
            csv::ErrorKind::Io(e) => Error::Common(common::Error::io(path, e)),
            kind => Error::Data(format!(
                "{}: {at}not readable as CSV: {kind:?}",
                path.display()
            )),
        }
    };
    // RFC 4180, as Python's csv module and spreadsheets write it; short rows are reported
    // field by field below rather than as a record-length error.
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::Headers)
        .from_reader(common::text::open(path)?);
    let header = reader.headers().map_err(csv_error)?.clone();
    if header.is_empty() {
        return Err(Error::Data(format!("{}: empty file", path.display())));
    }
    let col = |name: &str| {
        header.iter().position(|c| c == name).ok_or_else(|| {
            Error::Data(format!(
                "{}: no column `{name}` in the header ({})",
                path.display(),
                header.iter().collect::<Vec<_>>().join(",")
            ))
        })
    };
    use common::schema::scored::{SCORE, SENTENCE1, SENTENCE2};
    let (c1, c2, cs) = (col(SENTENCE1)?, col(SENTENCE2)?, col(SCORE)?);
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        // Rows count records, the header being row 1 (a quoted newline does not add one).
        let row = record.position().map_or(0, |p| p.record() + 1);
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let get = |c: usize, name: &str| text(path, row, name, record.get(c).map(str::to_string));
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
        Source::Jsonl(..) | Source::Scored(_) => None,
    })
}
