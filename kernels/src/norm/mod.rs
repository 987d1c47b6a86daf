//! Row-wise LayerNorm with the semantics of [`scalar::layer_norm`], rows split across the
//! pool in fixed blocks (each row is computed the same way whichever thread runs it).

use crate::dispatch::{record, Kernel};
use crate::simd::F32s;
#[cfg(target_arch = "aarch64")]
use crate::simd::Neon;
#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2, Avx512};
use crate::threads::{DisjointMut, ThreadPool};
use crate::{scalar, Isa};

/// Rows per pool task: enough work to outweigh taking a task.
const ROWS_PER_TASK: usize = 16;

/// `out = (x − mean) / sqrt(var + eps) · gamma + beta` over each row of `dim` features;
/// the rows are `x.len() / dim`, mean and variance two-pass in f32.
///
/// Runs on `pool` with `isa`'s row kernel (`Isa::Scalar`: the reference's). Panics if the
/// CPU lacks `isa`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    isa: Isa,
    dim: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
    pool: &ThreadPool,
) {
    if dim == 0 {
        return;
    }
    let rows = x.len() / dim;
    assert!(out.len() >= rows * dim, "out too short");
    assert!(
        gamma.len() >= dim && beta.len() >= dim,
        "gamma or beta too short"
    );
    assert!(isa.is_supported(), "this CPU lacks {isa:?}");
    let out = DisjointMut::new(&mut out[..rows * dim]);
    pool.run(rows.div_ceil(ROWS_PER_TASK), &|task| {
        let first = task * ROWS_PER_TASK;
        let len = ROWS_PER_TASK.min(rows - first) * dim;
        let x = &x[first * dim..][..len];
        // SAFETY: task `task` alone writes its block of rows.
        let out = unsafe { out.piece(first * dim, len) };
        match isa {
            // SAFETY (all three): checked above that the CPU supports `isa`.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { layer_norm_avx512(dim, x, gamma, beta, eps, out) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => unsafe { layer_norm_avx2(dim, x, gamma, beta, eps, out) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { layer_norm_neon(dim, x, gamma, beta, eps, out) },
            _ => {
                record(Kernel::LayerNorm, Isa::Scalar);
                scalar::layer_norm(dim, x, gamma, beta, eps, out)
            }
        }
    });
}

/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn layer_norm_avx512(
    dim: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    record(Kernel::LayerNorm, Isa::Avx512);
    layer_norm_rows::<Avx512>(dim, x, gamma, beta, eps, out)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn layer_norm_avx2(
    dim: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    record(Kernel::LayerNorm, Isa::Avx2Fma);
    layer_norm_rows::<Avx2>(dim, x, gamma, beta, eps, out)
}

/// # Safety
/// The CPU must support NEON.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn layer_norm_neon(
    dim: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    record(Kernel::LayerNorm, Isa::Neon);
    layer_norm_rows::<Neon>(dim, x, gamma, beta, eps, out)
}

/// LayerNorm of each `dim`-wide row of `x` into `out`, with `V`'s vectors and a masked
/// tail.
///
/// # Safety
/// The CPU must support `V`'s instruction set.
#[inline(always)]
unsafe fn layer_norm_rows<V: F32s>(
    dim: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    let (gamma, beta) = (&gamma[..dim], &beta[..dim]);
    for (row, out_row) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mean = sum_of_deviations::<V>(row, 0.0, false) / dim as f32;
        let variance = sum_of_deviations::<V>(row, mean, true) / dim as f32;
        let inv_std = 1.0 / (variance + eps).sqrt();
        let (mean_v, inv_std_v) = (V::splat(mean), V::splat(inv_std));
        let whole = dim / V::LANES * V::LANES;
        for j in (0..whole).step_by(V::LANES) {
            // SAFETY: j + LANES ≤ dim, the length of all four slices.
            unsafe {
                let (v, g, b) = (
                    V::load(row.as_ptr().add(j)),
                    V::load(gamma.as_ptr().add(j)),
                    V::load(beta.as_ptr().add(j)),
                );
                v.sub(mean_v)
                    .mul(inv_std_v)
                    .fma(g, b)
                    .store(out_row.as_mut_ptr().add(j));
            }
        }
        if whole < dim {
            let n = dim - whole;
            // SAFETY: elements whole..dim lie within all four slices; only they are read
            // and written.
            unsafe {
                let (v, g, b) = (
                    V::load_tail(row.as_ptr().add(whole), n),
                    V::load_tail(gamma.as_ptr().add(whole), n),
                    V::load_tail(beta.as_ptr().add(whole), n),
                );
                v.sub(mean_v)
                    .mul(inv_std_v)
                    .fma(g, b)
                    .store_tail(out_row.as_mut_ptr().add(whole), n);
            }
        }
    }
}

/// `Σ (x − center)` or, when `squared`, `Σ (x − center)²`; four accumulators so that the
/// additions' latency does not bound the loop, the remainder in masked vectors.
#[inline(always)]
unsafe fn sum_of_deviations<V: F32s>(row: &[f32], center: f32, squared: bool) -> f32 {
    let center = V::splat(center);
    let mut acc = [V::zero(); 4];
    let mut blocks = row.chunks_exact(4 * V::LANES);
    for block in &mut blocks {
        for (k, acc) in acc.iter_mut().enumerate() {
            // SAFETY: the block has 4·LANES elements.
            let d = unsafe { V::load(block.as_ptr().add(k * V::LANES)) }.sub(center);
            *acc = accumulate(*acc, d, squared);
        }
    }
    for (k, part) in blocks.remainder().chunks(V::LANES).enumerate() {
        let n = part.len();
        // SAFETY: only the part's n elements are read.
        let d = unsafe { V::load_tail(part.as_ptr(), n) }
            .sub(center)
            .keep_first(n);
        acc[k] = accumulate(acc[k], d, squared);
    }
    acc[0].add(acc[1]).add(acc[2].add(acc[3])).reduce_sum()
}

/// `acc + d²` when `squared`, else `acc + d`.
#[inline(always)]
unsafe fn accumulate<V: F32s>(acc: V, d: V, squared: bool) -> V {
    if squared {
        d.fma(d, acc)
    } else {
        acc.add(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Compares with the reference, on gamma and beta derived from `seed`.
    fn check(dim: usize, x: &[f32], eps: f32, seed: u64, threads: usize) {
        let ramp = |i: usize, k: u64| ((i as u64 ^ seed.wrapping_mul(k)) % 97) as f32 / 48.0 - 1.0;
        let gamma: Vec<f32> = (0..dim).map(|i| ramp(i, 3)).collect();
        let beta: Vec<f32> = (0..dim).map(|i| ramp(i, 5)).collect();
        let mut expected = vec![0.0; x.len()];
        scalar::layer_norm(dim, x, &gamma, &beta, eps, &mut expected);
        let pool = ThreadPool::new(threads);
        for isa in crate::tested_isas() {
            let mut actual = vec![f32::NAN; x.len()];
            layer_norm(isa, dim, x, &gamma, &beta, eps, &mut actual, &pool);
            let whole_rows = x.len() / dim * dim;
            for (i, (a, e)) in actual.iter().zip(&expected).take(whole_rows).enumerate() {
                assert!(
                    (a - e).abs() <= 1e-5 * (1.0 + e.abs()),
                    "{isa:?} out[{i}]: {a} vs {e}"
                );
            }
        }
    }

    fn rows_of_some_width() -> impl Strategy<Value = (usize, Vec<f32>)> {
        prop_oneof![1..=40usize, Just(768), 700..=800usize]
            .prop_flat_map(|dim| (Just(dim), prop::collection::vec(-4.0f32..4.0, 0..=40 * dim)))
    }

    proptest! {
        // A fixed seed: every run draws the same cases.
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x1a7),
            ..ProptestConfig::default()
        })]

        #[test]
        fn matches_scalar(
            (dim, x) in rows_of_some_width(),
            offset in -3.0f32..3.0,
            eps in prop_oneof![Just(1e-12f32), Just(1e-6), Just(1e-5)],
            seed: u64,
            threads in 1..=3usize,
        ) {
            let x: Vec<f32> = x.iter().map(|v| v + offset).collect();
            check(dim, &x, eps, seed, threads);
        }
    }
}
