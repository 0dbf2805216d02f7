//! The document split: which documents are held out for evaluation, so that no document
//! contributes both training pairs and evaluation passages (a split by pair lets evaluation
//! pairs come from the neighbouring passages of training pairs, and overstates what tuning
//! does). select-pairs draws it and writes the list; tune-embeddings and its `evaluate`
//! subcommand read the same list.
//!
//! The list file: UTF-8 text, one document id per line, sorted.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{Error, Result};

/// The held-out documents among `doc_ids`: the `round(fraction × n)` documents (n distinct ids)
/// whose sha256 of `"{seed}:{id}"` is smallest. A pure function of the ids, the fraction and
/// the seed — independent of order, threads and of the other stages' settings.
pub fn held_out_documents<'a>(
    doc_ids: impl IntoIterator<Item = &'a str>,
    fraction: f64,
    seed: u64,
) -> BTreeSet<String> {
    let ids: BTreeSet<&str> = doc_ids.into_iter().collect();
    let n = (ids.len() as f64 * fraction).round() as usize;
    let mut keyed: Vec<(String, &str)> = ids
        .into_iter()
        .map(|id| {
            let key = crate::provenance::sha256_bytes(format!("{seed}:{id}").as_bytes());
            (key, id)
        })
        .collect();
    keyed.sort();
    keyed
        .into_iter()
        .take(n)
        .map(|(_, id)| id.to_string())
        .collect()
}

/// Writes the list atomically.
pub fn write_doc_list(path: &Path, docs: &BTreeSet<String>) -> Result<()> {
    let mut text = String::new();
    for d in docs {
        text.push_str(d);
        text.push('\n');
    }
    crate::atomic::write_atomic(path, text.as_bytes())
}

/// Reads a list written by [`write_doc_list`] (blank lines ignored). An empty list is an
/// error: evaluation needs at least one document.
pub fn read_doc_list(path: &Path) -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let docs: BTreeSet<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if docs.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no document id in the held-out list",
            path.display()
        )));
    }
    Ok(docs)
}
