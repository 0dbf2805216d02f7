//! The embedding scheduler: texts sorted by length go into batches capped by texts and by
//! padded tokens, and on CPU each batch runs whole on one core (a long-lived one-thread pool
//! per core) rather than every op being split across cores.

use crate::error::{Error, Result};

/// Call first thing in the `main` of a binary that only infers: inference on CPU runs one
/// batch per core ([`batch_per_core`]), so candle's own pool for its elementwise ops (the
/// embedding sums, pooling) would only add a thread that spins between ops on cores that are
/// already busy: 1.4 % of CPU samples went to its spin loop and barrier. An explicit
/// `CANDLE_NUM_THREADS` is left alone. Before any thread starts, as it sets the environment.
pub fn run_candle_ops_inline() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// One single-thread rayon pool per thread of the global pool, started once: long-lived
/// threads keep their allocator heaps, so memory freed by one call is reused by the next
/// rather than left behind in the heaps of exited threads.
fn core_pools() -> Result<&'static [rayon::ThreadPool]> {
    static POOLS: std::sync::OnceLock<Vec<rayon::ThreadPool>> = std::sync::OnceLock::new();
    if let Some(pools) = POOLS.get() {
        return Ok(pools);
    }
    let pools = (0..rayon::current_num_threads())
        .map(|i| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(move |_| format!("embed-{i}"))
                .build()
                .map_err(|e| Error::Invalid(format!("cannot start a worker thread: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(POOLS.get_or_init(|| pools))
}

/// Runs `work(0..jobs)` on `cores` threads that each take the next job and run it alone, in a
/// one-thread rayon pool so the kernels inside do not split it further. On CPU this beats
/// splitting every matmul and kernel of one batch across cores: a forward pass is ~100 ops,
/// each of which would end in a barrier, and one-core matmuls skip the partitioning.
pub(crate) fn batch_per_core<T: Send>(
    cores: usize,
    jobs: usize,
    work: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<(usize, T)>> {
    let pools = core_pools()?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = |pool: &rayon::ThreadPool| -> Result<Vec<(usize, T)>> {
        pool.install(|| {
            let mut done = Vec::new();
            loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if k >= jobs {
                    return Ok(done);
                }
                match work(k) {
                    Ok(v) => done.push((k, v)),
                    Err(e) => {
                        next.store(jobs, std::sync::atomic::Ordering::Relaxed); // stop the others
                        return Err(e);
                    }
                }
            }
        })
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = pools[..cores.min(pools.len())]
            .iter()
            .map(|pool| s.spawn(|| worker(pool)))
            .collect();
        let mut all = Vec::with_capacity(jobs);
        for h in handles {
            all.extend(h.join().expect("embedding worker panicked")?);
        }
        Ok(all)
    })
}

/// Splits `order` (longest text first) into consecutive batches of at most `max_texts` texts
/// whose padded size (count × first, i.e. longest, length) stays within `max_tokens`; a text
/// longer than the budget goes alone.
pub(crate) fn token_budget_batches<'a>(
    order: &'a [usize],
    ids: &[Vec<u32>],
    max_texts: usize,
    max_tokens: usize,
) -> Vec<&'a [usize]> {
    let mut batches = Vec::new();
    let mut rest = order;
    while !rest.is_empty() {
        let longest = ids[rest[0]].len().max(1);
        let n = (max_tokens / longest)
            .clamp(1, max_texts.max(1))
            .min(rest.len());
        let (batch, tail) = rest.split_at(n);
        batches.push(batch);
        rest = tail;
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::{batch_per_core, token_budget_batches};
    use crate::error::Error;

    #[test]
    fn batch_per_core_runs_every_job_once_on_one_thread_pools_and_stops_on_error() {
        let done = batch_per_core(2, 50, |k| Ok((k * 3, rayon::current_num_threads()))).unwrap();
        let mut jobs: Vec<usize> = done.iter().map(|(k, _)| *k).collect();
        jobs.sort_unstable();
        assert_eq!(jobs, (0..50).collect::<Vec<_>>());
        assert!(done
            .iter()
            .all(|&(k, (v, threads))| v == k * 3 && threads == 1));
        let failed = batch_per_core(2, 50, |k| {
            if k == 7 {
                Err(Error::Invalid("job 7".into()))
            } else {
                Ok(k)
            }
        });
        assert!(matches!(failed, Err(Error::Invalid(m)) if m == "job 7"));
    }

    #[test]
    fn batches_respect_the_text_and_token_budgets() {
        let ids: Vec<Vec<u32>> = [100, 90, 10, 10, 10, 5, 300]
            .iter()
            .map(|&n| vec![0; n])
            .collect();
        let order = [6, 0, 1, 2, 3, 4, 5];
        let batches = token_budget_batches(&order, &ids, 3, 200);
        // 300 tokens exceed the budget and go alone; 2 × 100 fit; then three texts at most.
        assert_eq!(batches, vec![&[6][..], &[0, 1], &[2, 3, 4], &[5]]);
    }
}
