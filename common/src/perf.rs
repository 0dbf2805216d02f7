//! Measurements for benchmarks: the machine's fp32 FMA peak (so throughput can be stated as a
//! fraction of what this CPU can do, measured in the same run) and peak resident memory.

use std::time::Instant;

/// fp32 GFLOP/s of independent fused multiply-adds on `threads` threads, for about `millis`:
/// the best of five trials, since other load on a shared machine can only lower a trial.
pub fn fma_peak_gflops(threads: usize, millis: u64) -> f64 {
    (0..5)
        .map(|_| fma_trial(threads, (millis / 5).max(1)))
        .fold(0.0, f64::max)
}

fn fma_trial(threads: usize, millis: u64) -> f64 {
    let per_thread: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(move || fma_thread(millis)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("fma thread"))
            .collect()
    });
    per_thread.iter().sum()
}

fn fma_thread(millis: u64) -> f64 {
    let start = Instant::now();
    let mut flops = 0f64;
    while start.elapsed().as_millis() < millis as u128 {
        flops += fma_burst();
    }
    flops / start.elapsed().as_secs_f64() / 1e9
}

/// FLOPs of one burst of 12 independent FMA chains (enough to cover FMA latency × 2 ports).
fn fma_burst() -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was just detected.
            return unsafe { x86::burst_avx512() };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected.
            return unsafe { x86::burst_avx2() };
        }
    }
    scalar_burst()
}

fn scalar_burst() -> f64 {
    let mut acc = [1.0f32; 16];
    for _ in 0..100_000 {
        for a in acc.iter_mut() {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    std::hint::black_box(acc);
    2.0 * 16.0 * 100_000.0
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    const ITERS: usize = 100_000;

    /// 12 named accumulators so they stay in registers: an array would be spilled to the
    /// stack and the loop would measure store forwarding instead of FMA throughput.
    macro_rules! burst {
        ($set:ident, $fma:ident, $lanes:expr) => {{
            let m = $set(0.999_999);
            let c = $set(1e-7);
            let (mut a0, mut a1, mut a2, mut a3) = ($set(1.0), $set(1.1), $set(1.2), $set(1.3));
            let (mut a4, mut a5, mut a6, mut a7) = ($set(1.4), $set(1.5), $set(1.6), $set(1.7));
            let (mut a8, mut a9, mut a10, mut a11) = ($set(1.8), $set(1.9), $set(2.0), $set(2.1));
            for _ in 0..ITERS {
                a0 = $fma(a0, m, c);
                a1 = $fma(a1, m, c);
                a2 = $fma(a2, m, c);
                a3 = $fma(a3, m, c);
                a4 = $fma(a4, m, c);
                a5 = $fma(a5, m, c);
                a6 = $fma(a6, m, c);
                a7 = $fma(a7, m, c);
                a8 = $fma(a8, m, c);
                a9 = $fma(a9, m, c);
                a10 = $fma(a10, m, c);
                a11 = $fma(a11, m, c);
            }
            std::hint::black_box([a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11]);
            (2 * $lanes * 12 * ITERS) as f64
        }};
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn burst_avx512() -> f64 {
        burst!(_mm512_set1_ps, _mm512_fmadd_ps, 16)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn burst_avx2() -> f64 {
        burst!(_mm256_set1_ps, _mm256_fmadd_ps, 8)
    }
}

/// Peak resident set size of this process (VmHWM), in bytes; None off Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
