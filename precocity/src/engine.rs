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

/// Centre chunks per matrix product: large enough to amortise packing the comparison year,
/// small enough that a block's products (rows × comparison chunks) stay in L2. Fixed, so the
/// products (and so the output bytes) do not depend on the thread count.
pub const ROW_BLOCK: usize = 48;

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
        comps: &comps,
        train_masks: &train_masks,
        exclusions,
        grid,
        distance,
    };
    let blocks: Vec<Vec<[f64; 3]>> = (0..centre.rows().div_ceil(ROW_BLOCK))
        .into_par_iter()
        .map(|b| ctx.block(b * ROW_BLOCK..((b + 1) * ROW_BLOCK).min(centre.rows())))
        .collect();
    YearMeasures {
        values: blocks.into_iter().flatten().collect(),
        pairs,
    }
}

struct Context<'a> {
    centre: &'a YearBlock,
    comps: &'a [Option<&'a YearBlock>],
    train_masks: &'a [Option<Vec<bool>>],
    exclusions: &'a Exclusions,
    grid: &'a Grid,
    distance: Distance,
}

/// Which comparison chunks a filter drops for one (centre document, comparison year): `None`
/// keeps them all. Masks are cumulative (nested filters), `true` = excluded.
type Masks = Vec<Option<std::rc::Rc<Vec<bool>>>>;

impl Context<'_> {
    /// The measures of centre rows `rows` (a block), in row order.
    fn block(&self, rows: std::ops::Range<usize>) -> Vec<[f64; 3]> {
        let grid = self.grid;
        let (nfrac, nfilt, nd) = (grid.fractions.len(), grid.filters.len(), self.comps.len());
        // year_means[row][fraction][filter][offset], NaN where the year has nothing to compare.
        let per_row = nfrac * nfilt * nd;
        let mut year_means = vec![f64::NAN; rows.len() * per_row];
        let dim = self.centre.dim;
        let mut products = Vec::new();
        let mut vals: Vec<f32> = Vec::new();
        for (oi, comp) in self.comps.iter().enumerate() {
            let Some(comp) = comp else { continue };
            let n = comp.rows();
            products.resize(rows.len() * n, 0.0f32);
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
                let out = &mut year_means[i * per_row..(i + 1) * per_row];
                let mut done: Option<(usize, Option<*const Vec<bool>>)> = None;
                for (fi, mask) in masks.iter().enumerate() {
                    let key = mask.as_ref().map(|m| std::rc::Rc::as_ptr(m));
                    // A filter that drops nothing more than the previous one has its results.
                    if let Some((prev, prev_key)) = done {
                        if prev_key == key {
                            for f in 0..nfrac {
                                out[(f * nfilt + fi) * nd + oi] = out[(f * nfilt + prev) * nd + oi];
                            }
                            continue;
                        }
                    }
                    vals.clear();
                    match mask {
                        None => vals.extend_from_slice(s),
                        Some(m) => vals
                            .extend(s.iter().zip(m.iter()).filter(|(_, &x)| !x).map(|(v, _)| *v)),
                    }
                    let means = closest_means(&mut vals, &grid.fractions, self.distance, h);
                    for (f, mean) in means.into_iter().enumerate() {
                        out[(f * nfilt + fi) * nd + oi] = mean;
                    }
                    done = Some((fi, key));
                }
            }
        }
        year_means
            .chunks(per_row.max(1))
            .take(rows.len())
            .flat_map(|ym| chunk_measures(ym, grid, &self.offsets()))
            .collect()
    }

    fn offsets(&self) -> Vec<i32> {
        let r = self.grid.max_radius() as i32;
        (-r..=r).filter(|&d| d != 0).collect()
    }

    /// One mask per requested filter for centre document `doc` against `comp`.
    fn masks(&self, doc: usize, comp: &YearBlock, train: Option<&Vec<bool>>) -> Masks {
        let id = self.centre.doc_id(doc);
        let train = train.map(|m| std::rc::Rc::new(m.clone()));
        let auth = self.exclusions.author_columns(id, comp);
        let quote = self.exclusions.quote_columns(id, comp);
        let extend = |base: &Option<std::rc::Rc<Vec<bool>>>, cols: &[usize]| {
            if cols.is_empty() {
                return base.clone();
            }
            let mut m = base
                .as_ref()
                .map(|b| b.as_ref().clone())
                .unwrap_or_else(|| vec![false; comp.rows()]);
            cols.iter().for_each(|&c| m[c] = true);
            Some(std::rc::Rc::new(m))
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

/// The mean distance to the ⌈f·N⌉ closest of `vals` (products s, reordered in place) for each
/// fraction f; NaN for all when `vals` is empty. `h` is Σ p ln p of the centre chunk (KL only).
pub fn closest_means(vals: &mut [f32], fractions: &[f64], distance: Distance, h: f64) -> Vec<f64> {
    let n = vals.len();
    if n == 0 {
        return vec![f64::NAN; fractions.len()];
    }
    // Largest fraction first: each selection then works inside the previous one's prefix.
    let mut order: Vec<usize> = (0..fractions.len()).collect();
    order.sort_by(|&a, &b| fractions[b].total_cmp(&fractions[a]));
    let mut means = vec![f64::NAN; fractions.len()];
    let mut prefix = n;
    for fi in order {
        // As the reference computes it (math.ceil(len * fraction)), so float rounding agrees.
        let k = ((n as f64 * fractions[fi]).ceil() as usize).clamp(1, n);
        if k < prefix {
            vals[..prefix].select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            prefix = k;
        }
        means[fi] = sum_distances(&vals[..k], distance, h) / k as f64;
    }
    means
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
    const LANES: usize = 8;
    let mut num = [1f64; LANES];
    let mut den = [1f64; LANES];
    let mut exponent: i64 = 0;
    for block in s.chunks(LANES * 32) {
        let mut exact = block.chunks_exact(LANES);
        for c in &mut exact {
            for l in 0..LANES {
                let x = c[l].clamp(-COS_CLAMP, COS_CLAMP) as f64;
                num[l] *= 1.0 + x;
                den[l] *= 1.0 - x;
            }
        }
        for (l, &v) in exact.remainder().iter().enumerate() {
            let x = v.clamp(-COS_CLAMP, COS_CLAMP) as f64;
            num[l] *= 1.0 + x;
            den[l] *= 1.0 - x;
        }
        for l in 0..LANES {
            exponent += take_exponent(&mut num[l]) - take_exponent(&mut den[l]);
        }
    }
    let mut ln = exponent as f64 * std::f64::consts::LN_2;
    for l in 0..LANES {
        ln += num[l].ln() - den[l].ln();
    }
    -0.5 * ln
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
