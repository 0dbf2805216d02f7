//! The per-year cap: no year contributes more pairs than the `rank`-th smallest year does
//! (and never more than `--per-year`), so the tuned model does not lean towards the decades
//! that happen to be best digitised.

use rand::seq::index::sample as sample_indices;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// min(`per_year`, the `rank`-th smallest of `counts`), `rank` counting from 1; with fewer
/// years than `rank`, the largest count.
pub fn cap(counts: &[usize], per_year: Option<usize>, rank: usize) -> usize {
    let mut sorted: Vec<usize> = counts.iter().copied().filter(|c| *c > 0).collect();
    sorted.sort_unstable();
    let kth = sorted
        .get(rank.saturating_sub(1))
        .or(sorted.last())
        .copied()
        .unwrap_or(0);
    per_year.map_or(kth, |n| n.min(kth))
}

/// At most `cap` of `rows`, drawn uniformly without replacement and kept in their order.
pub fn sample<T>(rows: Vec<T>, cap: usize, seed: u64) -> Vec<T> {
    if rows.len() <= cap {
        return rows;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut keep = vec![false; rows.len()];
    for i in sample_indices(&mut rng, rows.len(), cap) {
        keep[i] = true;
    }
    rows.into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect()
}
