//! The computation of one centre year: every chunk of the year's documents against every chunk
//! of the years around it, as blocked matrix products with the distance transform, the
//! exclusion masks and the per-row selection of the closest fraction fused over each block.
//!
//! Semantics follow Historical-AI-Lab/novelty, `calc_precocity_worker_for_embeddings.py`
//! (`calculate_a_year`), with the deviations documented on [`crate::Options`]. For a centre
//! chunk p, a comparison year y = Y + d and a filter F, the year mean is the mean distance to
//! the ⌈f·N⌉ closest of the N comparison chunks F keeps; novelty over radius r is the mean of
//! the year means for d = −r … −1, transience for d = 1 … r (years without comparison chunks
//! left out), and precocity is novelty − transience.
//!
//! Both distances are decreasing functions of one matrix product s = centre · compareᵀ:
//! cosine: d = −artanh(s) on unit vectors (s clamped to ±(1 − 2⁻²⁰)); KL(p‖c) = Σ p ln p − p · ln c
//! on probability vectors. So the closest chunks are those of largest s, selected on the f32
//! products, and only sums of the transform are needed: Σ −artanh is computed as a logarithm of
//! products (no logarithm per pair), Σ KL is linear in Σ s.

use rayon::prelude::*;

use crate::corpus::{Window, YearBlock};
use crate::exclusions::Exclusions;
use crate::{Distance, Filter, Grid};

/// Centre chunks per matrix product: large enough to amortise packing the comparison year
/// (at 48 rows packing took half as long as the products). Fixed, so the products (and so the
/// output bytes) do not depend on the thread count.
pub const ROW_BLOCK: usize = 256;

/// |cos| is clamped to 1 − 2⁻²⁰, so identical vectors are at distance −artanh(1 − 2⁻²⁰) ≈ −7.28
/// (the closest possible) rather than at −∞; the reference gives them 0 (as if orthogonal).
pub const COS_CLAMP: f32 = 1.0 - 1.0 / 1_048_576.0;

/// Per chunk of the centre year, in the year's row order: `[fraction][filter][radius]` triples
/// (precocity, novelty, transience), NaN where undefined.
pub struct YearMeasures {
    pub values: Vec<[f64; 3]>,
    /// Centre × comparison chunk pairs compared (each counted once, whatever the filters).
    pub pairs: u64,
}

/// Layout of one chunk's measures: `[fraction][filter][radius]`.
pub fn measure_index(grid: &Grid, fraction: usize, filter: usize, radius: usize) -> usize {
    (fraction * grid.filters.len() + filter) * grid.radii.len() + radius
}

/// Computes the measures of every chunk of centre year `year`; `window` must hold every corpus
/// year within the largest radius of it.
pub fn centre_year(
    window: &Window,
    year: i32,
    exclusions: &Exclusions,
    grid: &Grid,
    distance: Distance,
) -> YearMeasures {
    let centre = window.get(year).expect("centre year is loaded");
    let max_r = grid.max_radius() as i32;
    // d = −R … −1, 1 … R, the comparison years that exist in the window.
    let offsets: Vec<i32> = (-max_r..=max_r).filter(|&d| d != 0).collect();
    let comps: Vec<Option<&YearBlock>> = offsets
        .iter()
        .map(|&d| window.get(year + d).filter(|b| b.rows() > 0))
        .collect();
    let pairs = comps.iter().flatten().map(|b| b.rows() as u64).sum::<u64>() * centre.rows() as u64;
    // Train exclusions are the same for every centre document: one mask per comparison year.
    let train_masks: Vec<Option<Vec<bool>>> = comps
        .iter()
        .map(|c| c.and_then(|b| exclusions.train_mask(b)))
        .collect();
    let ctx = Context {
        centre,
        train_masks: &train_masks,
        exclusions,
        grid,
        distance,
    };
    // One task per (row block, comparison year): enough tasks for any core count even when a
    // year has few blocks. Each returns its rows' year means `[row][fraction][filter]`.
    let nblocks = centre.rows().div_ceil(ROW_BLOCK);
    let tasks: Vec<(usize, usize)> = (0..nblocks)
        .flat_map(|b| {
            (0..comps.len())
                .filter(|&oi| comps[oi].is_some())
                .map(move |oi| (b, oi))
        })
        .collect();
    let means: Vec<Vec<f64>> = tasks
        .par_iter()
        .map(|&(b, oi)| {
            let rows = b * ROW_BLOCK..((b + 1) * ROW_BLOCK).min(centre.rows());
            ctx.year_means(rows, comps[oi].expect("present"), oi)
        })
        .collect();
    // year_means[row][fraction][filter][offset], NaN where the year has nothing to compare.
    let (nfrac, nfilt, nd) = (grid.fractions.len(), grid.filters.len(), offsets.len());
    let per_row = nfrac * nfilt * nd;
    let mut year_means = vec![f64::NAN; centre.rows() * per_row];
    for (&(b, oi), m) in tasks.iter().zip(&means) {
        for (i, row_means) in m.chunks(nfrac * nfilt).enumerate() {
            let row = b * ROW_BLOCK + i;
            for (j, &v) in row_means.iter().enumerate() {
                year_means[row * per_row + j * nd + oi] = v;
            }
        }
    }
    let values = year_means
        .par_chunks(per_row.max(1))
        .flat_map_iter(|ym| chunk_measures(ym, grid, &offsets))
        .collect();
    YearMeasures { values, pairs }
}

struct Context<'a> {
    centre: &'a YearBlock,
    train_masks: &'a [Option<Vec<bool>>],
    exclusions: &'a Exclusions,
    grid: &'a Grid,
    distance: Distance,
}

/// Which comparison chunks a filter drops for one (centre document, comparison year): `None`
/// keeps them all. Masks are cumulative (nested filters), `true` = excluded.
type Masks = Vec<Option<std::rc::Rc<Mask>>>;

struct Mask {
    excluded: Vec<bool>,
    /// How many are excluded.
    count: usize,
}

impl Mask {
    fn new(excluded: Vec<bool>) -> Mask {
        let count = excluded.iter().filter(|&&x| x).count();
        Mask { excluded, count }
    }
}

impl Context<'_> {
    /// Year means `[row][fraction][filter]` of centre rows `rows` against comparison year
    /// `comp` (offset index `oi`).
    fn year_means(&self, rows: std::ops::Range<usize>, comp: &YearBlock, oi: usize) -> Vec<f64> {
        let grid = self.grid;
        let (nfrac, nfilt) = (grid.fractions.len(), grid.filters.len());
        let mut out = vec![f64::NAN; rows.len() * nfrac * nfilt];
        let dim = self.centre.dim;
        let n = comp.rows();
        let mut products = vec![0.0f32; rows.len() * n];
        // SAFETY: the slices cover m×k, n×k and m×n row-major matrices.
        unsafe {
            gemm::gemm(
                rows.len(),
                n,
                dim,
                products.as_mut_ptr(),
                1,
                n as isize,
                false,
                self.centre.centre[rows.start * dim..].as_ptr(),
                1,
                dim as isize,
                comp.compare().as_ptr(),
                dim as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        let mut vals: Vec<f32> = Vec::with_capacity(n);
        let mut cands: Vec<(f32, u32)> = Vec::with_capacity(n);
        // The largest fraction below 1 sets how many of the closest chunks a row needs.
        let f_max = grid
            .fractions
            .iter()
            .copied()
            .filter(|&f| f < 1.0)
            .fold(0.0, f64::max);
        let mut doc = usize::MAX;
        let mut masks: Masks = Vec::new();
        for (i, row) in rows.clone().enumerate() {
            let row_doc = self.centre.doc_of_row(row);
            if row_doc != doc {
                doc = row_doc;
                masks = self.masks(doc, comp, self.train_masks[oi].as_ref());
            }
            let s = &products[i * n..(i + 1) * n];
            let h = self.centre.neg_entropy(row);
            candidates(s, f_max, &mut cands);
            let row_out = &mut out[i * nfrac * nfilt..(i + 1) * nfrac * nfilt];
            let mut done: Option<(usize, Option<*const Mask>)> = None;
            for (fi, mask) in masks.iter().enumerate() {
                let key = mask.as_ref().map(std::rc::Rc::as_ptr);
                // A filter that drops nothing more than the previous one has its results.
                if let Some((prev, prev_key)) = done {
                    if prev_key == key {
                        for f in 0..nfrac {
                            row_out[f * nfilt + fi] = row_out[f * nfilt + prev];
                        }
                        continue;
                    }
                }
                let excluded = mask.as_ref().map(|m| m.excluded.as_slice());
                let kept = n - mask.as_ref().map_or(0, |m| m.count);
                let total = sum_distances_masked(s, excluded, self.distance, h);
                // The candidates are every product ≥ some threshold; if enough of them are kept,
                // they hold the closest ⌈f·kept⌉ kept chunks for every f ≤ f_max.
                vals.clear();
                match excluded {
                    None => vals.extend(cands.iter().map(|c| c.0)),
                    Some(m) => vals.extend(cands.iter().filter(|c| !m[c.1 as usize]).map(|c| c.0)),
                }
                if vals.len() < ((kept as f64 * f_max).ceil() as usize).min(kept) {
                    vals.clear();
                    match excluded {
                        None => vals.extend_from_slice(s),
                        Some(m) => {
                            vals.extend(s.iter().zip(m).filter(|(_, &x)| !x).map(|(v, _)| *v))
                        }
                    }
                }
                let means =
                    closest_means(&mut vals, kept, total, &grid.fractions, self.distance, h);
                for (f, mean) in means.into_iter().enumerate() {
                    row_out[f * nfilt + fi] = mean;
                }
                done = Some((fi, key));
            }
        }
        out
    }

    /// One mask per requested filter for centre document `doc` against `comp`.
    fn masks(&self, doc: usize, comp: &YearBlock, train: Option<&Vec<bool>>) -> Masks {
        let id = self.centre.doc_id(doc);
        let train = train.map(|m| std::rc::Rc::new(Mask::new(m.clone())));
        let auth = self.exclusions.author_columns(id, comp);
        let quote = self.exclusions.quote_columns(id, comp);
        let extend = |base: &Option<std::rc::Rc<Mask>>, cols: &[usize]| {
            if cols.is_empty() {
                return base.clone();
            }
            let mut m = base
                .as_ref()
                .map(|b| b.excluded.clone())
                .unwrap_or_else(|| vec![false; comp.rows()]);
            cols.iter().for_each(|&c| m[c] = true);
            Some(std::rc::Rc::new(Mask::new(m)))
        };
        let with_auth = extend(&train, &auth);
        let with_quote = extend(&with_auth, &quote);
        self.grid
            .filters
            .iter()
            .map(|f| match f {
                Filter::NoFilter => None,
                Filter::Train => train.clone(),
                Filter::TrainAuth => with_auth.clone(),
                Filter::TrainAuthQuote => with_quote.clone(),
            })
            .collect()
    }
}

/// Every product of row `s` at or above a threshold chosen (from a strided sample) so that
/// about 1.5·f_max of them, and at least ⌈f_max·N⌉ unless the sample misled, pass; values with
/// their column. Empty when f_max is 0 (no fraction below 1).
fn candidates(s: &[f32], f_max: f64, out: &mut Vec<(f32, u32)>) {
    out.clear();
    if f_max <= 0.0 || s.is_empty() {
        return;
    }
    const SAMPLE: usize = 128;
    let step = s.len().div_ceil(SAMPLE);
    let mut sample: Vec<f32> = s.iter().step_by(step).copied().collect();
    let rank = ((sample.len() as f64 * f_max * 1.5).ceil() as usize + 2).min(sample.len() - 1);
    sample.select_nth_unstable_by(rank, |a, b| b.total_cmp(a));
    let threshold = sample[rank];
    // Branch-free compaction: every product is written, the end advances only past passes.
    out.resize(s.len() + 1, (0.0, 0));
    let mut end = 0;
    for (j, &v) in s.iter().enumerate() {
        out[end] = (v, j as u32);
        end += (v >= threshold) as usize;
    }
    out.truncate(end);
}

/// The mean distance to the ⌈f·n⌉ closest of the `n` kept chunks for each fraction f, NaN for
/// all when n = 0. `vals` (products s, reordered in place) must hold the ⌈f·n⌉ largest kept
/// products for every f whose ⌈f·n⌉ < n; `total` is the sum of all n distances. `h` is Σ p ln p
/// of the centre chunk (KL only).
pub fn closest_means(
    vals: &mut [f32],
    n: usize,
    total: f64,
    fractions: &[f64],
    distance: Distance,
    h: f64,
) -> Vec<f64> {
    if n == 0 {
        return vec![f64::NAN; fractions.len()];
    }
    // Largest fraction first: each selection then works inside the previous one's prefix.
    let mut order: Vec<usize> = (0..fractions.len()).collect();
    order.sort_by(|&a, &b| fractions[b].total_cmp(&fractions[a]));
    let mut means = vec![f64::NAN; fractions.len()];
    let mut prefix = vals.len();
    for fi in order {
        // As the reference computes it (math.ceil(len * fraction)), so float rounding agrees.
        let k = ((n as f64 * fractions[fi]).ceil() as usize).clamp(1, n);
        if k == n {
            means[fi] = total / n as f64;
            continue;
        }
        if k < prefix {
            vals[..prefix].select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            prefix = k;
        }
        means[fi] = sum_distances(&vals[..k], distance, h) / k as f64;
    }
    means
}

/// Σ distance over the products of `s` that `excluded` keeps (all when None).
pub fn sum_distances_masked(
    s: &[f32],
    excluded: Option<&[bool]>,
    distance: Distance,
    h: f64,
) -> f64 {
    match (distance, excluded) {
        (Distance::Cosine, None) => sum_neg_artanh(s),
        // An excluded product counts as s = 0, whose factors (1 ± 0) change nothing.
        (Distance::Cosine, Some(m)) => sum_neg_artanh_kept(s, m),
        (Distance::Kld, None) => sum_distances(s, distance, h),
        (Distance::Kld, Some(m)) => {
            let (sum, n) = s
                .iter()
                .zip(m)
                .filter(|(_, &x)| !x)
                .fold((0f64, 0usize), |(a, c), (&v, _)| (a + v as f64, c + 1));
            n as f64 * h - sum
        }
    }
}

/// Σ distance over products `s`.
pub fn sum_distances(s: &[f32], distance: Distance, h: f64) -> f64 {
    match distance {
        Distance::Cosine => sum_neg_artanh(s),
        Distance::Kld => s.len() as f64 * h - s.iter().map(|&v| v as f64).sum::<f64>(),
    }
}

/// Σ −artanh(clamp(s)) = −½ ln(Π (1 + s) / Π (1 − s)), the products kept in f64 lanes whose
/// binary exponents are moved into an integer every 32 factors (each factor is in [2⁻²⁰, 2],
/// so a lane stays a normal number); one logarithm per lane instead of one per pair.
pub fn sum_neg_artanh(s: &[f32]) -> f64 {
    neg_artanh_sum(s, None)
}

/// As [`sum_neg_artanh`] over the products `excluded` does not drop.
fn sum_neg_artanh_kept(s: &[f32], excluded: &[bool]) -> f64 {
    neg_artanh_sum(s, Some(excluded))
}

const LANES: usize = 8;

/// Multiplies 8 factors (1 ± x) into each lane; a dropped product counts as x = 0.
#[inline(always)]
fn artanh_lanes(
    num: &mut [f64; LANES],
    den: &mut [f64; LANES],
    s: &[f32],
    dropped: Option<&[bool]>,
) {
    for l in 0..LANES {
        let keep = dropped.is_none_or(|d| !d[l]);
        let x = if keep {
            s[l].clamp(-COS_CLAMP, COS_CLAMP) as f64
        } else {
            0.0
        };
        num[l] *= 1.0 + x;
        den[l] *= 1.0 - x;
    }
}

fn neg_artanh_sum(s: &[f32], dropped: Option<&[bool]>) -> f64 {
    const BLOCK: usize = LANES * 32;
    let mut num = [1f64; LANES];
    let mut den = [1f64; LANES];
    let mut exponent: i64 = 0;
    let mut tail_s = [0f32; LANES];
    let mut tail_d = [true; LANES];
    for (b, block) in s.chunks(BLOCK).enumerate() {
        let d = dropped.map(|d| &d[b * BLOCK..b * BLOCK + block.len()]);
        let whole = block.len() / LANES * LANES;
        match d {
            None => block[..whole]
                .chunks_exact(LANES)
                .for_each(|c| artanh_lanes(&mut num, &mut den, c, None)),
            Some(d) => block[..whole]
                .chunks_exact(LANES)
                .zip(d[..whole].chunks_exact(LANES))
                .for_each(|(c, m)| artanh_lanes(&mut num, &mut den, c, Some(m))),
        }
        if whole < block.len() {
            let rest = block.len() - whole;
            tail_s[..rest].copy_from_slice(&block[whole..]);
            tail_d[..rest]
                .iter_mut()
                .enumerate()
                .for_each(|(j, t)| *t = d.is_some_and(|d| d[whole + j]));
            tail_s[rest..].fill(0.0);
            tail_d[rest..].fill(true);
            artanh_lanes(&mut num, &mut den, &tail_s, Some(&tail_d));
        }
        for l in 0..LANES {
            exponent += take_exponent(&mut num[l]) - take_exponent(&mut den[l]);
        }
    }
    // Each lane is now in [1, 2): their products fit, so two logarithms in all.
    let (n, d) = (num.iter().product::<f64>(), den.iter().product::<f64>());
    -0.5 * (exponent as f64 * std::f64::consts::LN_2 + n.ln() - d.ln())
}

/// Splits a positive normal `x` into m·2ᵉ with m in [1, 2): leaves m in `x`, returns e.
fn take_exponent(x: &mut f64) -> i64 {
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    *x = f64::from_bits((bits & !(0x7ff << 52)) | (1023 << 52));
    e
}

/// A chunk's (precocity, novelty, transience) per `[fraction][filter][radius]` from its year
/// means `[fraction][filter][offset]`: novelty over d = −r…−1 and transience over 1…r are means
/// of the defined year means (NaN when there are none).
fn chunk_measures(year_means: &[f64], grid: &Grid, offsets: &[i32]) -> Vec<[f64; 3]> {
    let nd = offsets.len();
    let nfilt = grid.filters.len();
    let mut out = vec![[f64::NAN; 3]; grid.fractions.len() * nfilt * grid.radii.len()];
    for f in 0..grid.fractions.len() {
        for fi in 0..nfilt {
            let ym = &year_means[(f * nfilt + fi) * nd..(f * nfilt + fi + 1) * nd];
            for (ri, &r) in grid.radii.iter().enumerate() {
                let side = |lo: i32, hi: i32| {
                    let (sum, count) = offsets
                        .iter()
                        .zip(ym)
                        .filter(|(&d, m)| d >= lo && d <= hi && !m.is_nan())
                        .fold((0.0, 0usize), |(s, c), (_, &m)| (s + m, c + 1));
                    if count == 0 {
                        f64::NAN
                    } else {
                        sum / count as f64
                    }
                };
                let novelty = side(-(r as i32), -1);
                let transience = side(1, r as i32);
                out[measure_index(grid, f, fi, ri)] = [novelty - transience, novelty, transience];
            }
        }
    }
    out
}
