//! NEON LayerNorm rows.

use std::arch::aarch64::*;

const LANES: usize = 4;

/// LayerNorm of each `dim`-wide row of `x` into `out`.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn layer_norm(
    dim: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    let (gamma, beta) = (&gamma[..dim], &beta[..dim]);
    let whole = dim / LANES * LANES;
    for (row, out_row) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mean = sum_of_deviations(row, 0.0, false) / dim as f32;
        let variance = sum_of_deviations(row, mean, true) / dim as f32;
        let inv_std = 1.0 / (variance + eps).sqrt();
        let mean_v = vdupq_n_f32(mean);
        for j in (0..whole).step_by(LANES) {
            // SAFETY: j + LANES ≤ dim, the length of all four slices.
            unsafe {
                let normalised =
                    vmulq_n_f32(vsubq_f32(vld1q_f32(row.as_ptr().add(j)), mean_v), inv_std);
                let (g, b) = (
                    vld1q_f32(gamma.as_ptr().add(j)),
                    vld1q_f32(beta.as_ptr().add(j)),
                );
                vst1q_f32(out_row.as_mut_ptr().add(j), vfmaq_f32(b, normalised, g));
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
#[target_feature(enable = "neon")]
unsafe fn sum_of_deviations(row: &[f32], center: f32, squared: bool) -> f32 {
    let center_v = vdupq_n_f32(center);
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut blocks = row.chunks_exact(4 * LANES);
    for block in &mut blocks {
        for (k, acc) in acc.iter_mut().enumerate() {
            // SAFETY: the block has 4·LANES elements.
            let d = vsubq_f32(
                unsafe { vld1q_f32(block.as_ptr().add(k * LANES)) },
                center_v,
            );
            *acc = if squared {
                vfmaq_f32(*acc, d, d)
            } else {
                vaddq_f32(*acc, d)
            };
        }
    }
    let total = vaddvq_f32(vaddq_f32(
        vaddq_f32(acc[0], acc[1]),
        vaddq_f32(acc[2], acc[3]),
    ));
    blocks.remainder().iter().fold(total, |sum, &x| {
        let d = x - center;
        if squared {
            d.mul_add(d, sum)
        } else {
            sum + d
        }
    })
}
