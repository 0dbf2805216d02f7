//! How a corpus is cut into shards, each embedded into its own output file: by decade (the
//! reference workflow's one file per decade), by year ranges, or into n parts of equal rows.
//! A Slurm array task takes every n-th shard: task id t of n task slots embeds the shards whose
//! index i (0-based, in plan order) has i mod n = t mod n. So `--array=0-3` and `--array=1-4`
//! over 4 slots both cover every shard once, and resubmitting tasks 2 and 3 of a 4-slot array
//! (`--array=2,3`, the slot count fixed at 4) embeds exactly shards 2, 6, … and 3, 7, ….

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

/// The shards array task `task` of `tasks` task slots embeds: those at indices i with
/// i mod tasks = task mod tasks (so a task id may start at 0, at 1, or anywhere).
pub fn for_task(shards: Vec<Shard>, task: usize, tasks: usize) -> Vec<Shard> {
    shards
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % tasks == task % tasks)
        .map(|(_, s)| s)
        .collect()
}

/// Refuses an array whose tasks would not share the shards out one to one. `tasks`: the task
/// slots the shards are dealt over (`--num-shards`, else SLURM_ARRAY_TASK_COUNT); `span`: the
/// array's lowest and highest task ids (SLURM_ARRAY_TASK_MIN / _MAX) when running in one.
///
/// Every task of an array sees the same values, so a bad array is refused on every task before
/// anything is embedded (never a silent hole or two tasks writing one shard). Ids spanning more
/// than `tasks` would give two tasks the same shards; with the slot count taken from
/// SLURM_ARRAY_TASK_COUNT this also refuses arrays with gaps or steps (`--array=0,2`,
/// `--array=0-6:2`), which would leave shards out.
pub fn check_array(tasks: usize, span: Option<(usize, usize)>) -> Result<(), String> {
    if tasks == 0 {
        return Err("the number of array task slots must be at least 1".into());
    }
    match span {
        Some((min, max)) if max < min || max - min >= tasks => Err(format!(
            "array task ids {min}..{max} do not fit {tasks} task slot(s): some shards would be \
             embedded by two tasks or by none. Write the array as one contiguous range of \
             {tasks} ids (`#SBATCH --array=0-{}` or `--array=1-{tasks}`), or give the number of \
             slots with --num-shards N and submit any ids within N consecutive ones \
             (e.g. `sbatch --array=2,3` to redo tasks 2 and 3 of --num-shards 4)",
            tasks - 1
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(n: usize) -> Vec<Shard> {
        (0..n)
            .map(|i| Shard {
                name: i.to_string(),
                rows: Rows::Range {
                    start: i as u64,
                    end: i as u64 + 1,
                },
            })
            .collect()
    }

    fn names(task: usize, tasks: usize, n: usize) -> Vec<String> {
        for_task(shards(n), task, tasks)
            .into_iter()
            .map(|s| s.name)
            .collect()
    }

    #[test]
    fn arrays_from_0_or_1_cover_every_shard_once() {
        for first in [0, 1, 7] {
            let mut all: Vec<String> = (first..first + 3).flat_map(|t| names(t, 3, 7)).collect();
            all.sort();
            assert_eq!(all, ["0", "1", "2", "3", "4", "5", "6"], "ids from {first}");
            check_array(3, Some((first, first + 2))).unwrap();
        }
        assert_eq!(names(4, 4, 4), ["0"]);
        assert_eq!(names(2, 4, 9), ["2", "6"]);
    }

    #[test]
    fn arrays_with_gaps_or_too_many_ids_are_refused() {
        // --array=0,2 or 0-6:2 with the slot count from SLURM_ARRAY_TASK_COUNT (2 or 4).
        for (tasks, min, max) in [(2, 0, 2), (4, 0, 6), (4, 0, 4), (1, 3, 4)] {
            let e = check_array(tasks, Some((min, max))).unwrap_err();
            assert!(
                e.contains("--array=0-") && e.contains("--num-shards"),
                "{e}"
            );
        }
        check_array(4, Some((2, 3))).unwrap();
        check_array(4, None).unwrap();
        assert!(check_array(0, None).is_err());
    }
}
