//! AVX2+FMA LayerNorm rows.

use std::arch::x86_64::*;

use crate::attention::avx2::{horizontal_sum, tail_mask};

const LANES: usize = 8;

/// LayerNorm of each `dim`-wide row of `x` into `out`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn layer_norm(
    dim: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    let (gamma, beta) = (&gamma[..dim], &beta[..dim]);
    for (row, out_row) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mean = sum_of_deviations(row, 0.0, false) / dim as f32;
        let variance = sum_of_deviations(row, mean, true) / dim as f32;
        let inv_std = 1.0 / (variance + eps).sqrt();
        let (mean_v, inv_std_v) = (_mm256_set1_ps(mean), _mm256_set1_ps(inv_std));
        let whole = dim / LANES * LANES;
        for j in (0..whole).step_by(LANES) {
            // SAFETY: j + LANES ≤ dim, the length of all four slices.
            unsafe {
                let v = _mm256_loadu_ps(row.as_ptr().add(j));
                let normalised = _mm256_mul_ps(_mm256_sub_ps(v, mean_v), inv_std_v);
                let (g, b) = (
                    _mm256_loadu_ps(gamma.as_ptr().add(j)),
                    _mm256_loadu_ps(beta.as_ptr().add(j)),
                );
                _mm256_storeu_ps(
                    out_row.as_mut_ptr().add(j),
                    _mm256_fmadd_ps(normalised, g, b),
                );
            }
        }
        for j in whole..dim {
            out_row[j] = ((row[j] - mean) * inv_std).mul_add(gamma[j], beta[j]);
        }
    }
}

/// `Σ (x − center)` or, when `squared`, `Σ (x − center)²`; four accumulators so that the
/// additions' latency does not bound the loop.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_of_deviations(row: &[f32], center: f32, squared: bool) -> f32 {
    let center = _mm256_set1_ps(center);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut blocks = row.chunks_exact(4 * LANES);
    for block in &mut blocks {
        for (k, acc) in acc.iter_mut().enumerate() {
            // SAFETY: the block has 4·LANES elements.
            let d = _mm256_sub_ps(
                unsafe { _mm256_loadu_ps(block.as_ptr().add(k * LANES)) },
                center,
            );
            *acc = if squared {
                _mm256_fmadd_ps(d, d, *acc)
            } else {
                _mm256_add_ps(*acc, d)
            };
        }
    }
    for (k, part) in blocks.remainder().chunks(LANES).enumerate() {
        let mask = tail_mask(part.len());
        // SAFETY: the mask covers only the part's elements.
        let v = unsafe { _mm256_maskload_ps(part.as_ptr(), mask) };
        let d = _mm256_and_ps(_mm256_sub_ps(v, center), _mm256_castsi256_ps(mask));
        acc[k] = if squared {
            _mm256_fmadd_ps(d, d, acc[k])
        } else {
            _mm256_add_ps(acc[k], d)
        };
    }
    horizontal_sum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ))
}
