//! Row-wise LayerNorm with the semantics of [`scalar::layer_norm`], rows split across the
//! pool in fixed blocks (each row is computed the same way whichever thread runs it).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

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
            Isa::Avx512 => unsafe { avx512::layer_norm(dim, x, gamma, beta, eps, out) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => unsafe { avx2::layer_norm(dim, x, gamma, beta, eps, out) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { neon::layer_norm(dim, x, gamma, beta, eps, out) },
            _ => scalar::layer_norm(dim, x, gamma, beta, eps, out),
        }
    });
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
        for isa in Isa::supported() {
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
