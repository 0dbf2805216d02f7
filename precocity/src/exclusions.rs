//! The filters' inputs: documents used in training (`train`), documents sharing an author with
//! a centre document (`trainauth` adds them), chunks that quote it (`trainauthquote` adds them).
//! File formats are the reference workflow's (Historical-AI-Lab/novelty,
//! `calc_precocity_for_embeddings.py`): author overlaps `centre<TAB>other paperId` per line,
//! quotes `centre<TAB>chunkId<TAB>chunkId…` with chunk ids `paperId-chunknumber`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use common::parquet_io::{ColumnKind, ColumnSpec, TableReader};
use common::schema;
use common::{Error, Result};
use serde::Serialize;

use crate::corpus::{Corpus, YearBlock};

/// Where the training documents come from.
#[derive(Debug, Clone)]
pub enum TrainDocs {
    /// Every `doc_id` of a `pairs` table (select-pairs' output).
    Pairs(PathBuf),
    /// One document id per line (the first tab-separated field).
    List(PathBuf),
}

/// Ids in the exclusion inputs that name nothing in the corpus: counted, reported, ignored.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct UnknownIds {
    pub train_docs: u64,
    pub author_centres: u64,
    pub author_others: u64,
    pub quote_centres: u64,
    pub quote_chunks: u64,
}

impl UnknownIds {
    pub fn total(&self) -> u64 {
        self.train_docs
            + self.author_centres
            + self.author_others
            + self.quote_centres
            + self.quote_chunks
    }
}

#[derive(Debug, Default)]
pub struct Exclusions {
    train: HashSet<String>,
    authors: HashMap<String, HashSet<String>>,
    quotes: HashMap<String, HashSet<(String, i32)>>,
    pub unknown: UnknownIds,
}

impl Exclusions {
    /// Reads the three optional inputs, counting ids the corpus does not have.
    pub fn load(
        corpus: &Corpus,
        train: Option<&TrainDocs>,
        authors: Option<&Path>,
        quotes: Option<&Path>,
    ) -> Result<Exclusions> {
        let mut ex = Exclusions::default();
        match train {
            None => {}
            Some(TrainDocs::Pairs(path)) => {
                let spec = [ColumnSpec {
                    name: schema::pairs::DOC_ID,
                    kind: ColumnKind::Utf8,
                    optional: false,
                }];
                let mut reader = TableReader::open(path, schema::pairs::TABLE, &spec)?;
                while let Some(b) = reader.next_batch()? {
                    for i in 0..b.len() {
                        ex.train
                            .insert(b.text(schema::pairs::DOC_ID, i)?.to_string());
                    }
                }
            }
            Some(TrainDocs::List(path)) => {
                for_lines(path, |_, fields| {
                    if let Some(id) = fields.first().filter(|s| !s.is_empty()) {
                        ex.train.insert(id.to_string());
                    }
                    Ok(())
                })?;
            }
        }
        ex.unknown.train_docs = ex
            .train
            .iter()
            .filter(|d| !corpus.docs.contains_key(*d))
            .count() as u64;
        if let Some(path) = authors {
            for_lines(path, |line, fields| {
                let [centre, others @ ..] = fields else {
                    return Ok(());
                };
                if others.is_empty() {
                    return Err(Error::BadLine {
                        path: path.into(),
                        line,
                        reason: "expected centre<TAB>other paperId".into(),
                    });
                }
                if !corpus.docs.contains_key(*centre) {
                    ex.unknown.author_centres += 1;
                }
                for other in others.iter().filter(|o| !o.is_empty()) {
                    if !corpus.docs.contains_key(*other) {
                        ex.unknown.author_others += 1;
                    }
                    ex.authors
                        .entry(centre.to_string())
                        .or_default()
                        .insert(other.to_string());
                }
                Ok(())
            })?;
        }
        if let Some(path) = quotes {
            for_lines(path, |line, fields| {
                let [centre, chunks @ ..] = fields else {
                    return Ok(());
                };
                if !corpus.docs.contains_key(*centre) {
                    ex.unknown.quote_centres += 1;
                }
                for chunk in chunks.iter().filter(|c| !c.is_empty()) {
                    let parsed = chunk
                        .rsplit_once('-')
                        .and_then(|(d, i)| Some((d.to_string(), i.parse::<i32>().ok()?)));
                    let Some((doc, idx)) = parsed else {
                        return Err(Error::BadLine {
                            path: path.into(),
                            line,
                            reason: format!("chunk id {chunk:?} is not paperId-chunknumber"),
                        });
                    };
                    if !corpus.docs.contains_key(&doc) {
                        ex.unknown.quote_chunks += 1;
                    }
                    ex.quotes
                        .entry(centre.to_string())
                        .or_default()
                        .insert((doc, idx));
                }
                Ok(())
            })?;
        }
        Ok(ex)
    }

    /// Mask of `comp`'s training chunks (`true` = excluded), or None when it has none.
    pub fn train_mask(&self, comp: &YearBlock) -> Option<Vec<bool>> {
        let mut mask = vec![false; comp.rows()];
        let mut any = false;
        for (id, start, len) in comp.docs() {
            if self.train.contains(id) {
                mask[*start..start + len].iter_mut().for_each(|m| *m = true);
                any = true;
            }
        }
        any.then_some(mask)
    }

    /// Rows of `comp` written by an author of centre document `centre`.
    pub fn author_columns(&self, centre: &str, comp: &YearBlock) -> Vec<usize> {
        let Some(others) = self.authors.get(centre) else {
            return Vec::new();
        };
        let mut cols: Vec<usize> = others
            .iter()
            .filter_map(|o| comp.doc_rows(o))
            .flatten()
            .collect();
        cols.sort_unstable();
        cols
    }

    /// Rows of `comp` that quote centre document `centre`.
    pub fn quote_columns(&self, centre: &str, comp: &YearBlock) -> Vec<usize> {
        let Some(chunks) = self.quotes.get(centre) else {
            return Vec::new();
        };
        let mut cols: Vec<usize> = chunks
            .iter()
            .filter_map(|(d, i)| comp.chunk_row(d, *i))
            .collect();
        cols.sort_unstable();
        cols
    }
}

/// Calls `f(line number, tab-separated fields)` for each non-empty line.
fn for_lines(path: &Path, mut f: impl FnMut(u64, &[&str]) -> Result<()>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        f(i as u64 + 1, &fields)?;
    }
    Ok(())
}
