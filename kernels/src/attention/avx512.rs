//! The one attention kernel that AVX-512 has beyond the shared tiles: the key transpose
//! by gathers, which AVX2 (slow gathers on Zen 3) and NEON do element by element.

use std::arch::x86_64::*;

/// Keys of an AVX-512 panel: two 16-lane vectors.
const PANEL_KEYS: usize = 32;

/// Lanes `0..n.min(16)` set.
fn tail_mask(n: usize) -> __mmask16 {
    if n >= 16 {
        !0
    } else {
        (1 << n) - 1
    }
}

/// [`Kernels::transpose_keys`](super::Kernels::transpose_keys) for 32-key panels: each
/// of the panel's rows (one value of every key) by two 16-lane gathers.
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline(always)]
pub(super) unsafe fn transpose_keys(keys: &[f32], stride: usize, count: usize, panel: &mut [f32]) {
    let head_dim = panel.len() / PANEL_KEYS;
    if count == 0 || head_dim == 0 {
        return;
    }
    let span = (count - 1) * stride + head_dim;
    assert!(count <= PANEL_KEYS && keys.len() >= span && i32::try_from(span).is_ok());
    let offsets: [i32; PANEL_KEYS] = std::array::from_fn(|j| (j * stride) as i32);
    // SAFETY: `offsets` holds PANEL_KEYS = 2·16 values.
    let (lo, hi) = unsafe {
        (
            _mm512_loadu_si512(offsets.as_ptr().cast()),
            _mm512_loadu_si512(offsets.as_ptr().add(16).cast()),
        )
    };
    let (mask_lo, mask_hi) = (tail_mask(count), tail_mask(count.saturating_sub(16)));
    let zero = _mm512_setzero_ps();
    for c in 0..head_dim {
        let src = keys[c..].as_ptr();
        let dst = panel[c * PANEL_KEYS..].as_mut_ptr();
        // SAFETY: the masks select keys j < count, whose value c lies at j·stride + c
        // < span (asserted above); the row of the panel holds PANEL_KEYS values.
        unsafe {
            let v = _mm512_mask_i32gather_ps::<4>(zero, mask_lo, lo, src.cast());
            _mm512_mask_storeu_ps(dst, mask_lo, v);
            let v = _mm512_mask_i32gather_ps::<4>(zero, mask_hi, hi, src.cast());
            _mm512_mask_storeu_ps(dst.add(16), mask_hi, v);
        }
    }
}
