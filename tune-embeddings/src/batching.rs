//! Batches without duplicate texts: a text twice in one batch would be its own in-batch
//! negative. Like sentence-transformers' NoDuplicatesBatchSampler: walk a seeded permutation,
//! put each example in the current batch unless one of its texts is already there (it then
//! waits for a later batch).

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn text_key(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// The batches of one epoch, as indices into `texts` (each example's texts), in order.
pub fn epoch_batches(texts: &[Vec<&str>], batch_size: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let keys: Vec<Vec<u64>> = texts
        .iter()
        .map(|t| t.iter().map(|s| text_key(s)).collect())
        .collect();
    let mut batches = Vec::new();
    while !order.is_empty() {
        let mut batch = Vec::with_capacity(batch_size);
        let mut seen: HashSet<u64> = HashSet::new();
        let mut rest = Vec::with_capacity(order.len());
        for idx in order {
            let fits = batch.len() < batch_size && keys[idx].iter().all(|k| !seen.contains(k));
            if fits {
                seen.extend(keys[idx].iter().copied());
                batch.push(idx);
            } else {
                rest.push(idx);
            }
        }
        batches.push(batch);
        order = rest;
    }
    batches
}
