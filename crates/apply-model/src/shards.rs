//! How a corpus is cut into shards, each embedded into its own output file: by decade (the
//! reference workflow's one file per decade), by year ranges, or into n parts of equal rows.
//! A Slurm array task takes every n-th shard.

use std::collections::BTreeSet;

use common::corpus::{Corpus, EmptyTexts};
use common::parquet_io::BATCH_ROWS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ShardBy {
    Decade,
    /// Ranges of this many years, aligned to multiples of it (1900–1924, 1925–1949, …).
    Years(i32),
    /// This many parts of (nearly) equal row counts, in corpus order.
    Equal(usize),
}

impl std::str::FromStr for ShardBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = |v: &str| v.parse::<usize>().ok().filter(|n| *n > 0);
        match s.split_once(':') {
            None if s == "decade" => Ok(ShardBy::Decade),
            Some(("years", n)) => number(n)
                .map(|n| ShardBy::Years(n as i32))
                .ok_or_else(|| format!("bad year span in {s:?}")),
            Some(("equal", n)) => number(n)
                .map(ShardBy::Equal)
                .ok_or_else(|| format!("bad shard count in {s:?}")),
            _ => Err(format!(
                "unknown sharding {s:?}: use decade, years:N or equal:N"
            )),
        }
    }
}

/// Which rows a shard holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rows {
    /// Rows whose year is in `first..=last`.
    Years { first: i32, last: i32 },
    /// Rows `start..end` of the corpus, in order.
    Range { start: u64, end: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// File stem of the shard's outputs: `1850`, `1900-1924`, `part-00003-of-00008`.
    pub name: String,
    pub rows: Rows,
}

/// Every shard of the corpus, in order. Year-based shards exist only where the corpus has rows.
pub fn plan(corpus: &Corpus, by: ShardBy) -> common::Result<Vec<Shard>> {
    match by {
        ShardBy::Equal(n) => {
            let total = count_rows(corpus)?;
            Ok((0..n as u64)
                .map(|i| Shard {
                    name: format!("part-{i:05}-of-{n:05}"),
                    rows: Rows::Range {
                        start: total * i / n as u64,
                        end: total * (i + 1) / n as u64,
                    },
                })
                .collect())
        }
        ShardBy::Decade | ShardBy::Years(_) => {
            let span = if let ShardBy::Years(n) = by { n } else { 10 };
            let mut starts = BTreeSet::new();
            // Empty texts are the caller's rule (run checks it first); a plan needs every year.
            corpus.for_each_batch_with(BATCH_ROWS, EmptyTexts::Embed, |rows| {
                starts.extend(rows.iter().map(|r| r.year.div_euclid(span) * span));
                Ok(())
            })?;
            Ok(starts
                .into_iter()
                .map(|first| Shard {
                    name: if by == ShardBy::Decade {
                        first.to_string()
                    } else {
                        format!("{first}-{}", first + span - 1)
                    },
                    rows: Rows::Years {
                        first,
                        last: first + span - 1,
                    },
                })
                .collect())
        }
    }
}

fn count_rows(corpus: &Corpus) -> common::Result<u64> {
    if let Some(n) = corpus.known_rows() {
        return Ok(n);
    }
    let mut n = 0;
    corpus.for_each_batch_with(BATCH_ROWS, EmptyTexts::Embed, |rows| {
        n += rows.len() as u64;
        Ok(())
    })?;
    Ok(n)
}

/// The shards array task `task` of `tasks` embeds: every `tasks`-th one from `task`.
pub fn for_task(shards: Vec<Shard>, task: usize, tasks: usize) -> Vec<Shard> {
    shards
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % tasks == task)
        .map(|(_, s)| s)
        .collect()
}
