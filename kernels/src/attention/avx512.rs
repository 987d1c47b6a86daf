//! AVX-512F attention kernels: register tiles of `TILE_ROWS` query rows × 32 keys for the
//! scores and `TILE_ROWS` rows × 32 value columns for the context (two 16-lane vectors a
//! row, 24 of the 32 registers holding accumulators), the row-wise softmax steps between
//! them with masked tails, and the softmax's 16-lane `exp_shifted`.

use std::arch::x86_64::*;

use super::{Kernels, PREFETCH_AHEAD_BYTES};
use crate::expf::avx512::exp_shifted;

const LANES: usize = 16;
/// Query rows of one register tile.
const TILE_ROWS: usize = 12;
/// Keys per packed key panel, the width of one score tile: two vectors.
const PANEL_KEYS: usize = 2 * LANES;
/// Value columns per context tile: two vectors.
const TILE_COLS: usize = 2 * LANES;

/// The AVX-512F kernels.
pub(super) struct Avx512;

impl Kernels for Avx512 {
    const TILE_ROWS: usize = TILE_ROWS;
    const PANEL_KEYS: usize = PANEL_KEYS;
    const TILE_COLS: usize = TILE_COLS;

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn score_tile(
        queries: &[&[f32]],
        panel: &[f32],
        scale: f32,
        out: &mut [f32],
        stride: usize,
        rows: usize,
        cols: usize,
    ) {
        let queries: [&[f32]; TILE_ROWS] = queries.try_into().expect("TILE_ROWS queries");
        let head_dim = panel.len() / PANEL_KEYS;
        assert!(queries.iter().all(|q| q.len() == head_dim));
        assert!(rows > 0 && out.len() >= (rows - 1) * stride + cols && cols <= PANEL_KEYS);
        let mut acc = [[_mm512_setzero_ps(); 2]; TILE_ROWS];
        let k = panel.as_ptr();
        for c in 0..head_dim {
            // Keys PREFETCH_AHEAD_BYTES on, in this panel or the next, which follows it; a
            // prefetch never faults, wherever it points.
            let ahead = k.wrapping_add(c * PANEL_KEYS + PREFETCH_AHEAD_BYTES / 4);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast::<i8>());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(LANES).cast::<i8>());
            // SAFETY: c < head_dim, and the panel holds head_dim rows of PANEL_KEYS keys.
            let (k0, k1) = unsafe {
                (
                    _mm512_loadu_ps(k.add(c * PANEL_KEYS)),
                    _mm512_loadu_ps(k.add(c * PANEL_KEYS + LANES)),
                )
            };
            for (acc, q) in acc.iter_mut().zip(&queries) {
                // SAFETY: c < head_dim = q.len().
                let q = _mm512_set1_ps(unsafe { *q.get_unchecked(c) });
                acc[0] = _mm512_fmadd_ps(q, k0, acc[0]);
                acc[1] = _mm512_fmadd_ps(q, k1, acc[1]);
            }
        }
        let scale = _mm512_set1_ps(scale);
        let (mask0, mask1) = (tail_mask(cols), tail_mask(cols.saturating_sub(LANES)));
        for (r, acc) in acc.iter().enumerate().take(rows) {
            let dst = out[r * stride..].as_mut_ptr();
            // SAFETY: row r < rows starts in `out` with at least `cols` elements after it
            // (asserted above); the masks cover only those.
            unsafe {
                if cols == PANEL_KEYS {
                    _mm512_storeu_ps(dst, _mm512_mul_ps(acc[0], scale));
                    _mm512_storeu_ps(dst.add(LANES), _mm512_mul_ps(acc[1], scale));
                } else {
                    _mm512_mask_storeu_ps(dst, mask0, _mm512_mul_ps(acc[0], scale));
                    _mm512_mask_storeu_ps(dst.add(LANES), mask1, _mm512_mul_ps(acc[1], scale));
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn context_tile(
        weights: &[&[f32]],
        values: &[f32],
        value_stride: usize,
        acc: &mut [f32],
        acc_stride: usize,
        rescale: Option<&[f32]>,
    ) {
        let weights: [&[f32]; TILE_ROWS] = weights.try_into().expect("TILE_ROWS weights");
        let keys = weights[0].len();
        assert!(weights.iter().all(|w| w.len() == keys));
        assert!(keys == 0 || values.len() >= (keys - 1) * value_stride + TILE_COLS);
        assert!(acc.len() >= (TILE_ROWS - 1) * acc_stride + TILE_COLS);
        let mut sums = [[_mm512_setzero_ps(); 2]; TILE_ROWS];
        if let Some(rescale) = rescale {
            assert!(rescale.len() == TILE_ROWS);
            for (r, sum) in sums.iter_mut().enumerate() {
                let factor = _mm512_set1_ps(rescale[r]);
                let row = acc[r * acc_stride..].as_ptr();
                // SAFETY: each accumulator row has TILE_COLS elements (asserted above).
                unsafe {
                    sum[0] = _mm512_mul_ps(_mm512_loadu_ps(row), factor);
                    sum[1] = _mm512_mul_ps(_mm512_loadu_ps(row.add(LANES)), factor);
                }
            }
        }
        let v = values.as_ptr();
        // A row of TILE_COLS values a step, prefetched PREFETCH_AHEAD_BYTES ahead.
        let steps_ahead = PREFETCH_AHEAD_BYTES / (4 * TILE_COLS);
        for j in 0..keys {
            let ahead = v.wrapping_add((j + steps_ahead) * value_stride);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast::<i8>());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(LANES).cast::<i8>());
            // SAFETY: j < keys, and `values` holds TILE_COLS elements from row keys − 1.
            let (v0, v1) = unsafe {
                (
                    _mm512_loadu_ps(v.add(j * value_stride)),
                    _mm512_loadu_ps(v.add(j * value_stride + LANES)),
                )
            };
            for (sum, w) in sums.iter_mut().zip(&weights) {
                // SAFETY: j < keys = w.len().
                let w = _mm512_set1_ps(unsafe { *w.get_unchecked(j) });
                sum[0] = _mm512_fmadd_ps(w, v0, sum[0]);
                sum[1] = _mm512_fmadd_ps(w, v1, sum[1]);
            }
        }
        for (r, sum) in sums.iter().enumerate() {
            let row = acc[r * acc_stride..].as_mut_ptr();
            // SAFETY: as for the loads above.
            unsafe {
                _mm512_storeu_ps(row, sum[0]);
                _mm512_storeu_ps(row.add(LANES), sum[1]);
            }
        }
    }

    /// Gathers each of the panel's rows (one value of every key) with two 16-lane gathers.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn transpose_keys(keys: &[f32], stride: usize, count: usize, panel: &mut [f32]) {
        let head_dim = panel.len() / PANEL_KEYS;
        if count == 0 || head_dim == 0 {
            return;
        }
        let span = (count - 1) * stride + head_dim;
        assert!(count <= PANEL_KEYS && keys.len() >= span && i32::try_from(span).is_ok());
        let offsets: [i32; PANEL_KEYS] = std::array::from_fn(|j| (j * stride) as i32);
        // SAFETY: `offsets` holds PANEL_KEYS = 2·LANES values.
        let (lo, hi) = unsafe {
            (
                _mm512_loadu_si512(offsets.as_ptr().cast()),
                _mm512_loadu_si512(offsets.as_ptr().add(LANES).cast()),
            )
        };
        let (mask_lo, mask_hi) = (tail_mask(count), tail_mask(count.saturating_sub(LANES)));
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
                _mm512_mask_storeu_ps(dst.add(LANES), mask_hi, v);
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn max(row: &[f32]) -> f32 {
        let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut acc = [neg_inf; 2];
        let mut pairs = row.chunks_exact(2 * LANES);
        for pair in &mut pairs {
            // SAFETY: the pair has 2·LANES elements.
            unsafe {
                acc[0] = _mm512_max_ps(acc[0], _mm512_loadu_ps(pair.as_ptr()));
                acc[1] = _mm512_max_ps(acc[1], _mm512_loadu_ps(pair.as_ptr().add(LANES)));
            }
        }
        for (k, part) in pairs.remainder().chunks(LANES).enumerate() {
            // SAFETY: the mask covers only the part's elements; the others read as −∞.
            let v = unsafe { _mm512_mask_loadu_ps(neg_inf, tail_mask(part.len()), part.as_ptr()) };
            acc[k] = _mm512_max_ps(acc[k], v);
        }
        _mm512_reduce_max_ps(_mm512_max_ps(acc[0], acc[1]))
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn exp_shifted_in_place(row: &mut [f32], shift: f32) -> f32 {
        let shift = _mm512_set1_ps(shift);
        let mut sum = _mm512_setzero_ps();
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            let p = chunk.as_mut_ptr();
            // SAFETY: the chunk has LANES elements.
            unsafe {
                let e = exp_shifted(_mm512_loadu_ps(p), shift);
                _mm512_storeu_ps(p, e);
                sum = _mm512_add_ps(sum, e);
            }
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let mask = tail_mask(tail.len());
            // SAFETY: the mask covers only the tail's elements.
            unsafe {
                let e = exp_shifted(_mm512_maskz_loadu_ps(mask, tail.as_ptr()), shift);
                _mm512_mask_storeu_ps(tail.as_mut_ptr(), mask, e);
                sum = _mm512_mask_add_ps(sum, mask, sum, e);
            }
        }
        _mm512_reduce_add_ps(sum)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn scale(row: &mut [f32], factor: f32) {
        let factor = _mm512_set1_ps(factor);
        for chunk in row.chunks_mut(LANES) {
            let (p, mask) = (chunk.as_mut_ptr(), tail_mask(chunk.len()));
            // SAFETY: the mask covers only the chunk's elements.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, p);
                _mm512_mask_storeu_ps(p, mask, _mm512_mul_ps(v, factor));
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn scale_into(src: &[f32], dst: &mut [f32], factor: f32) {
        assert!(src.len() == dst.len());
        let factor = _mm512_set1_ps(factor);
        for (from, to) in src.chunks(LANES).zip(dst.chunks_mut(LANES)) {
            let mask = tail_mask(from.len());
            // SAFETY: the mask covers only the chunks' elements.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, from.as_ptr());
                _mm512_mask_storeu_ps(to.as_mut_ptr(), mask, _mm512_mul_ps(v, factor));
            }
        }
    }
}

/// Lanes `0..n.min(16)` set, for masked loads and stores of a row's tail.
#[inline]
pub(crate) fn tail_mask(n: usize) -> __mmask16 {
    if n >= LANES {
        !0
    } else {
        (1 << n) - 1
    }
}
