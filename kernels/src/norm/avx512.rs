//! AVX-512F LayerNorm rows: 16-lane vectors, masked tails.

use std::arch::x86_64::*;

use crate::attention::avx512::tail_mask;

const LANES: usize = 16;

/// LayerNorm of each `dim`-wide row of `x` into `out`.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
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
        let (mean_v, inv_std_v) = (_mm512_set1_ps(mean), _mm512_set1_ps(inv_std));
        for j in (0..dim).step_by(LANES) {
            let mask = tail_mask(dim - j);
            // SAFETY: the mask covers only elements j..dim, within all four slices.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(j));
                let normalised = _mm512_mul_ps(_mm512_sub_ps(v, mean_v), inv_std_v);
                let (g, b) = (
                    _mm512_maskz_loadu_ps(mask, gamma.as_ptr().add(j)),
                    _mm512_maskz_loadu_ps(mask, beta.as_ptr().add(j)),
                );
                _mm512_mask_storeu_ps(
                    out_row.as_mut_ptr().add(j),
                    mask,
                    _mm512_fmadd_ps(normalised, g, b),
                );
            }
        }
    }
}

/// `Σ (x − center)` or, when `squared`, `Σ (x − center)²`; four accumulators so that the
/// additions' latency does not bound the loop.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn sum_of_deviations(row: &[f32], center: f32, squared: bool) -> f32 {
    let center = _mm512_set1_ps(center);
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut blocks = row.chunks_exact(4 * LANES);
    for block in &mut blocks {
        for (k, acc) in acc.iter_mut().enumerate() {
            // SAFETY: the block has 4·LANES elements.
            let d = _mm512_sub_ps(
                unsafe { _mm512_loadu_ps(block.as_ptr().add(k * LANES)) },
                center,
            );
            *acc = if squared {
                _mm512_fmadd_ps(d, d, *acc)
            } else {
                _mm512_add_ps(*acc, d)
            };
        }
    }
    for (k, part) in blocks.remainder().chunks(LANES).enumerate() {
        let mask = tail_mask(part.len());
        // SAFETY: the mask covers only the part's elements.
        let v = unsafe { _mm512_maskz_loadu_ps(mask, part.as_ptr()) };
        let d = _mm512_maskz_sub_ps(mask, v, center);
        acc[k] = if squared {
            _mm512_fmadd_ps(d, d, acc[k])
        } else {
            _mm512_add_ps(acc[k], d)
        };
    }
    _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(acc[0], acc[1]),
        _mm512_add_ps(acc[2], acc[3]),
    ))
}
