//! Slice kernels for the ops around the encoder's matmuls: GELU, the attention softmax,
//! (residual +) LayerNorm, bias-gradient column sums and dropout masks, with backwards.
//!
//! Composed from candle primitives these ops walk memory several times, allocate an
//! intermediate per step, and call scalar libm `erff`/`expf` per element (a fifth of inference
//! time before this module existed). Here each is one pass over rows, split across rayon
//! threads (or run inside the caller's task, as attention does), with branch-free `exp` and `erf` that the compiler vectorizes; the row functions are
//! compiled three times (AVX-512, AVX2+FMA, baseline) and picked at run time, so the binary
//! stays portable.
//!
//! Accuracy: `exp` is Cephes' polynomial (relative error ≈ 1e-7) and `erf` Abramowitz–Stegun
//! 7.1.26 (absolute error ≤ 1.5e-7), so GELU is within ~1e-7 of the exact one: far below what
//! the reference-embedding tests can see (they hold at max abs 1e-4 and compare to 1e-6 here).

use rayon::prelude::*;

/// Rows handed to one rayon task: enough work to amortise the task, few enough to balance.
const MIN_ELEMS_PER_TASK: usize = 16 * 1024;

fn rows_per_task(row_len: usize) -> usize {
    (MIN_ELEMS_PER_TASK / row_len.max(1)).max(1)
}

/// Defines `fn $name` three times: for AVX-512, for AVX2+FMA and for the baseline, and picks one
/// at run time. The body's `#[inline(always)]` helpers are vectorized for each set; the body
/// itself should be a serial loop (the caller splits work across threads), since code behind a
/// rayon job boundary would not inherit the target features.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { portable($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { portable($($arg),*) }
                match simd_level() {
                    // SAFETY: simd_level() detected these features on this CPU.
                    SimdLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    SimdLevel::Avx2 => return unsafe { avx2($($arg),*) },
                    SimdLevel::Baseline => {}
                }
            }
            portable($($arg),*)
        }
    };
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SimdLevel {
    Avx512,
    Avx2,
    Baseline,
}

/// The instruction set the kernels run with on this CPU.
pub fn simd_level() -> SimdLevel {
    static LEVEL: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                if has!("avx512f") && has!("avx512vl") && has!("avx512dq") {
                    return SimdLevel::Avx512;
                }
                return SimdLevel::Avx2;
            }
        }
        SimdLevel::Baseline
    })
}

// ---------------------------------------------------------------------------------------------
// Scalar building blocks, written branch-free so that loops over them vectorize.

const LANES: usize = 16;

/// e^x for x in about [-87, 88] (clamped outside), relative error ≈ 1e-7.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    // n = round(x / ln 2) by the 1.5·2²³ trick: adding it pushes the fraction out of the
    // mantissa, whose low bits then hold n.
    const ROUND: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    // Cody–Waite: ln 2 split in two so r = x - n·ln 2 keeps its precision.
    let r = n.mul_add(2.121_944_4e-4, n.mul_add(-0.693_359_4, x));
    let r2 = r * r;
    let p = horner(
        r,
        &[
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ],
    );
    let er = p.mul_add(r2, r + 1.0);
    let bits = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits(((bits + 127) << 23) as u32);
    er * scale
}

/// The polynomial with `coefficients` (highest degree first) at `x`, in fused multiply-adds:
/// where the kernels are compiled with FMA (see `multiversion!`) each step is one instruction
/// instead of two; the baseline build, for CPUs without FMA (before 2013), calls libm for it.
#[inline(always)]
fn horner(x: f32, coefficients: &[f32]) -> f32 {
    coefficients[1..]
        .iter()
        .fold(coefficients[0], |acc, &c| acc.mul_add(x, c))
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π)
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// erfc(|x|/√2) and e^{-x²/2}: the two things GELU and its derivative need.
#[inline(always)]
fn erfc_abs_scaled(x: f32) -> (f32, f32) {
    let z = x.abs() * FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = horner(
        t,
        &[
            1.061_405_4,
            -1.453_152_1,
            1.421_413_7,
            -0.284_496_72,
            0.254_829_6,
        ],
    ) * t;
    let gauss = exp(-z * z);
    (poly * gauss, gauss)
}

/// Φ(x), the standard normal CDF, without cancellation on either side.
#[inline(always)]
fn normal_cdf(x: f32) -> (f32, f32) {
    let (erfc, gauss) = erfc_abs_scaled(x);
    let half = 0.5 * erfc; // Φ(-|x|)
    let cdf = if x < 0.0 { half } else { 1.0 - half };
    (cdf, gauss)
}

/// x·Φ(x): exact ("erf") GELU.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    x * normal_cdf(x).0
}

/// d/dx x·Φ(x) = Φ(x) + x·φ(x).
#[inline(always)]
fn gelu_grad(x: f32) -> f32 {
    let (cdf, gauss) = normal_cdf(x);
    cdf + x * FRAC_1_SQRT_2PI * gauss
}

#[inline(always)]
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    tree(acc, |a, b| a + b) + tail.iter().sum::<f32>()
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    tree(acc, |a, b| a + b) + tail
}

#[inline(always)]
fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    tail.iter().fold(tree(acc, f32::max), |m, &x| m.max(x))
}

/// Reduces the lanes pairwise (halves, quarters, ...), which compiles to a few shuffles
/// instead of a chain of sixteen dependent scalar ops; a short row pays that chain per row.
#[inline(always)]
fn tree(mut acc: [f32; LANES], op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            acc[l] = op(acc[l], acc[l + width]);
        }
        width /= 2;
    }
    acc[0]
}

// ---------------------------------------------------------------------------------------------
// Elementwise GELU.

multiversion! {
    fn gelu_task(xs: &[f32], out: &mut [f32]) {
        for (o, &x) in out.iter_mut().zip(xs) {
            *o = gelu(x);
        }
    }
}

multiversion! {
    fn gelu_grad_task(xs: &[f32], grad: &[f32], out: &mut [f32]) {
        for ((o, &x), &g) in out.iter_mut().zip(xs).zip(grad) {
            *o = g * gelu_grad(x);
        }
    }
}

/// `out = gelu(xs)`, exact (erf) GELU.
pub fn gelu_forward(xs: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(MIN_ELEMS_PER_TASK)
        .zip(xs.par_chunks(MIN_ELEMS_PER_TASK))
        .for_each(|(o, x)| gelu_task(x, o));
}

/// `out = grad · gelu'(xs)`.
pub fn gelu_backward(xs: &[f32], grad: &[f32], out: &mut [f32]) {
    out.par_chunks_mut(MIN_ELEMS_PER_TASK)
        .zip(xs.par_chunks(MIN_ELEMS_PER_TASK))
        .zip(grad.par_chunks(MIN_ELEMS_PER_TASK))
        .for_each(|((o, x), g)| gelu_grad_task(x, g, o));
}

// ---------------------------------------------------------------------------------------------
// Attention softmax over one (sequence, head) block; the caller runs blocks in parallel.

multiversion! {
    /// Rows of `keys = mask.len()` scores become `softmax(scale · row)` over the keys where
    /// `mask` is non-zero; the others get exactly 0. Every row needs one real key.
    pub fn softmax_in_place(rows: &mut [f32], mask: &[f32], scale: f32) {
        let keys = mask.len();
        // Each row is worked on in a buffer of whole vectors: at sentence lengths a row is
        // one or two vectors, and a scalar tail running exp cost as much as the vectors.
        let padded = keys.next_multiple_of(LANES);
        let mut keep = vec![0f32; padded];
        for (k, &m) in keep.iter_mut().zip(mask) {
            *k = if m != 0.0 { 1.0 } else { 0.0 };
        }
        let mut buf = vec![f32::NEG_INFINITY; padded];
        for row in rows.chunks_exact_mut(keys) {
            for ((b, &x), &k) in buf.iter_mut().zip(row.iter()).zip(&keep) {
                *b = if k != 0.0 { x * scale } else { f32::NEG_INFINITY };
            }
            let top = max(&buf);
            // exp clamps its argument, so padding is zeroed by its factor.
            for (b, &k) in buf.iter_mut().zip(&keep) {
                *b = exp(*b - top) * k;
            }
            let inv = 1.0 / sum(&buf);
            for (x, &b) in row.iter_mut().zip(&buf) {
                *x = b * inv;
            }
        }
    }
}

multiversion! {
    /// Turns `grad`, the gradient of the probabilities `probs`, into the gradient of the
    /// unscaled scores: `scale · p ⊙ (g − Σ g⊙p)` per row of `keys`.
    pub fn softmax_grad_in_place(probs: &[f32], grad: &mut [f32], keys: usize, scale: f32) {
        for (g, p) in grad.chunks_exact_mut(keys).zip(probs.chunks_exact(keys)) {
            let inner = dot(p, g);
            for (g, &p) in g.iter_mut().zip(p) {
                *g = scale * p * (*g - inner);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm over rows of `weight.len()`.

/// Mean and 1/σ of a row.
#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = sum(x) / n;
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        for l in 0..LANES {
            let d = c[l] - mean;
            acc[l] += d * d;
        }
    }
    let var = (acc.iter().sum::<f32>() + tail) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

multiversion! {
    /// `out = LayerNorm(xs + residual)`, or of `xs` alone without a residual.
    fn layer_norm_task(
        xs: &[f32],
        residual: Option<&[f32]>,
        weight: &[f32],
        bias: &[f32],
        eps: f32,
        out: &mut [f32],
    ) {
        let width = weight.len();
        for (row, (o, x)) in out.chunks_exact_mut(width).zip(xs.chunks_exact(width)).enumerate() {
            match residual {
                Some(r) => {
                    let r = &r[row * width..(row + 1) * width];
                    for ((o, &x), &r) in o.iter_mut().zip(x).zip(r) {
                        *o = x + r;
                    }
                }
                None => o.copy_from_slice(x),
            }
            let (mean, rstd) = row_stats(o, eps);
            for ((o, &w), &b) in o.iter_mut().zip(weight).zip(bias) {
                *o = (*o - mean) * rstd * w + b;
            }
        }
    }
}

/// LayerNorm over rows of `weight.len()`, of `xs + residual` when a residual is given.
pub fn layer_norm_forward(
    xs: &[f32],
    residual: Option<&[f32]>,
    weight: &[f32],
    bias: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    let chunk = weight.len() * rows_per_task(weight.len());
    out.par_chunks_mut(chunk)
        .zip(xs.par_chunks(chunk))
        .enumerate()
        .for_each(|(task, (o, x))| {
            let r = residual.map(|r| &r[task * chunk..task * chunk + x.len()]);
            layer_norm_task(x, r, weight, bias, eps, o)
        });
}

multiversion! {
    /// Input gradient into `dx`; weight and bias gradients added into `dw`, `db`.
    fn layer_norm_grad_task(
        xs: &[f32],
        weight: &[f32],
        grad: &[f32],
        eps: f32,
        dx: &mut [f32],
        dw: &mut [f32],
        db: &mut [f32],
    ) {
        let width = weight.len();
        let n = width as f32;
        let mut gw = vec![0f32; width];
        let mut xhat = vec![0f32; width];
        for ((dx, x), g) in dx
            .chunks_exact_mut(width)
            .zip(xs.chunks_exact(width))
            .zip(grad.chunks_exact(width))
        {
            let (mean, rstd) = row_stats(x, eps);
            for i in 0..width {
                xhat[i] = (x[i] - mean) * rstd;
                gw[i] = g[i] * weight[i];
                dw[i] += g[i] * xhat[i];
                db[i] += g[i];
            }
            let c1 = sum(&gw) / n;
            let c2 = dot(&gw, &xhat) / n;
            for i in 0..width {
                dx[i] = rstd * (gw[i] - c1 - xhat[i] * c2);
            }
        }
    }
}

/// Writes the input gradient into `dx` and returns the weight and bias gradients.
pub fn layer_norm_backward(
    xs: &[f32],
    weight: &[f32],
    grad: &[f32],
    eps: f32,
    dx: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let width = weight.len();
    let chunk = width * rows_per_task(width);
    let zero = || (vec![0f32; width], vec![0f32; width]);
    dx.par_chunks_mut(chunk)
        .zip(xs.par_chunks(chunk))
        .zip(grad.par_chunks(chunk))
        .fold(zero, |(mut dw, mut db), ((dx, x), g)| {
            layer_norm_grad_task(x, weight, g, eps, dx, &mut dw, &mut db);
            (dw, db)
        })
        .reduce(zero, |(mut a, mut b), (c, d)| {
            a.iter_mut().zip(&c).for_each(|(a, c)| *a += c);
            b.iter_mut().zip(&d).for_each(|(b, d)| *b += d);
            (a, b)
        })
}

// ---------------------------------------------------------------------------------------------
// Dropout masks from a counter-based hash: value i of stream s under seed k depends on (k, s, i)
// alone, so a mask can be regenerated (attention's backward) or drawn in parallel, and costs a
// few multiplies per value instead of a stream cipher's block.

#[inline(always)]
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

multiversion! {
    /// Inverted-dropout factors: 0 with probability `p`, else 1/(1-p).
    pub fn dropout_mask(seed: u64, stream: u64, p: f32, out: &mut [f32]) {
        let base = splitmix64(seed ^ splitmix64(stream));
        // 24 random bits per value are plenty to resolve p.
        let threshold = (p as f64 * (1u64 << 24) as f64) as u64;
        let keep = 1.0 / (1.0 - p);
        for (i, o) in out.iter_mut().enumerate() {
            let bits = splitmix64(base.wrapping_add(i as u64)) >> 40;
            *o = if bits < threshold { 0.0 } else { keep };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Column sums (a bias gradient: the output gradient summed over rows).

multiversion! {
    fn add_rows_task(rows: &[f32], acc: &mut [f32]) {
        for row in rows.chunks_exact(acc.len()) {
            for (a, &x) in acc.iter_mut().zip(row) {
                *a += x;
            }
        }
    }
}

/// Sums of the columns of a row-major matrix `width` wide.
pub fn column_sums(xs: &[f32], width: usize) -> Vec<f32> {
    let chunk = width * rows_per_task(width).max(64);
    xs.par_chunks(chunk)
        .fold(
            || vec![0f32; width],
            |mut acc, rows| {
                add_rows_task(rows, &mut acc);
                acc
            },
        )
        .reduce(
            || vec![0f32; width],
            |mut a, b| {
                add_rows_task(&b, &mut a);
                a
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_its_range() {
        let mut worst = 0f64;
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 3e-7, "relative error {worst}");
    }

    #[test]
    fn gelu_and_its_gradient_are_accurate() {
        // Reference values by f64 numerical integration-free formulas: Φ via erfc in libm.
        let phi = |x: f64| 0.5 * libm_erfc(-x / std::f64::consts::SQRT_2);
        let (mut worst, mut worst_grad) = (0f64, 0f64);
        for i in -1000..=1000 {
            let x = i as f64 / 100.0;
            let want = x * phi(x);
            let want_grad = phi(x) + x * (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
            worst = worst.max((gelu(x as f32) as f64 - want).abs());
            worst_grad = worst_grad.max((gelu_grad(x as f32) as f64 - want_grad).abs());
        }
        assert!(worst < 2e-6, "gelu abs error {worst}");
        assert!(worst_grad < 1e-6, "gelu' abs error {worst_grad}");
    }

    #[test]
    fn dropout_masks_drop_p_and_depend_on_seed_and_stream_only() {
        let mut a = vec![0f32; 100_000];
        let mut b = a.clone();
        dropout_mask(7, 3, 0.1, &mut a);
        dropout_mask(7, 3, 0.1, &mut b);
        assert_eq!(a, b);
        let dropped = a.iter().filter(|&&x| x == 0.0).count() as f64 / a.len() as f64;
        assert!((dropped - 0.1).abs() < 0.005, "dropped {dropped}");
        assert!(a.iter().all(|&x| x == 0.0 || (x - 1.0 / 0.9).abs() < 1e-6));
        dropout_mask(7, 4, 0.1, &mut b);
        assert_ne!(a, b);
        dropout_mask(8, 3, 0.1, &mut b);
        assert_ne!(a, b);
    }

    /// erfc in f64 from its continued fraction / series, good to ~1e-12 on [-8, 8]: enough to
    /// judge an f32 approximation without a libm dependency.
    fn libm_erfc(x: f64) -> f64 {
        if x < 0.0 {
            return 2.0 - libm_erfc(-x);
        }
        if x < 3.0 {
            // erf series: 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
            let mut term = x;
            let mut total = x;
            for n in 1..200 {
                term *= -x * x / n as f64;
                total += term / (2 * n + 1) as f64;
            }
            1.0 - total * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // Lentz continued fraction for erfc.
            let mut f = 0.0;
            for k in (1..200).rev() {
                f = (k as f64 / 2.0) / (x + f);
            }
            (-x * x).exp() / std::f64::consts::PI.sqrt() / (x + f)
        }
    }
}
