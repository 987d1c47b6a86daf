//! AVX2+FMA attention kernels: register tiles of `TILE_ROWS` query rows × 16 keys for the
//! scores and `TILE_ROWS` rows × 16 value columns for the context, the row-wise softmax
//! steps between them, with the softmax's `exp_shifted`.

use std::arch::x86_64::*;

use super::{Kernels, PREFETCH_AHEAD_BYTES};
use crate::expf::avx2::exp_shifted;

/// Query rows of one register tile.
const TILE_ROWS: usize = 6;
/// Keys per packed key panel, the width of one score tile.
const PANEL_KEYS: usize = 16;
/// Value columns per context tile.
const TILE_COLS: usize = 16;

const LANES: usize = 8;

/// The AVX2+FMA kernels.
pub(super) struct Avx2;

impl Kernels for Avx2 {
    const TILE_ROWS: usize = TILE_ROWS;
    const PANEL_KEYS: usize = PANEL_KEYS;
    const TILE_COLS: usize = TILE_COLS;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
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
        let mut acc = [[_mm256_setzero_ps(); 2]; TILE_ROWS];
        let k = panel.as_ptr();
        for c in 0..head_dim {
            // Keys PREFETCH_AHEAD_BYTES on, in this panel or the next, which follows it; a
            // prefetch never faults, wherever it points.
            let ahead = k.wrapping_add(c * PANEL_KEYS + PREFETCH_AHEAD_BYTES / 4);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast::<i8>());
            // SAFETY: c < head_dim, and the panel holds head_dim rows of 16 keys.
            let (k0, k1) = unsafe {
                (
                    _mm256_loadu_ps(k.add(c * PANEL_KEYS)),
                    _mm256_loadu_ps(k.add(c * PANEL_KEYS + LANES)),
                )
            };
            for (acc, q) in acc.iter_mut().zip(&queries) {
                // SAFETY: c < head_dim = q.len().
                let q = _mm256_set1_ps(unsafe { *q.get_unchecked(c) });
                acc[0] = _mm256_fmadd_ps(q, k0, acc[0]);
                acc[1] = _mm256_fmadd_ps(q, k1, acc[1]);
            }
        }
        let scale = _mm256_set1_ps(scale);
        let (mask0, mask1) = (tail_mask(cols), tail_mask(cols.saturating_sub(LANES)));
        for (r, acc) in acc.iter().enumerate().take(rows) {
            let dst = out[r * stride..].as_mut_ptr();
            // SAFETY: row r < rows starts in `out` with at least `cols` elements after it
            // (asserted above); the masks cover only those.
            unsafe {
                if cols == PANEL_KEYS {
                    _mm256_storeu_ps(dst, _mm256_mul_ps(acc[0], scale));
                    _mm256_storeu_ps(dst.add(LANES), _mm256_mul_ps(acc[1], scale));
                } else {
                    _mm256_maskstore_ps(dst, mask0, _mm256_mul_ps(acc[0], scale));
                    _mm256_maskstore_ps(dst.add(LANES), mask1, _mm256_mul_ps(acc[1], scale));
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
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
        let mut sums = [[_mm256_setzero_ps(); 2]; TILE_ROWS];
        if let Some(rescale) = rescale {
            assert!(rescale.len() == TILE_ROWS);
            for (r, sum) in sums.iter_mut().enumerate() {
                let factor = _mm256_set1_ps(rescale[r]);
                let row = acc[r * acc_stride..].as_ptr();
                // SAFETY: each accumulator row has TILE_COLS elements (asserted above).
                unsafe {
                    sum[0] = _mm256_mul_ps(_mm256_loadu_ps(row), factor);
                    sum[1] = _mm256_mul_ps(_mm256_loadu_ps(row.add(LANES)), factor);
                }
            }
        }
        let v = values.as_ptr();
        // A row of TILE_COLS values a step, prefetched PREFETCH_AHEAD_BYTES ahead.
        let steps_ahead = PREFETCH_AHEAD_BYTES / (4 * TILE_COLS);
        for j in 0..keys {
            let ahead = v.wrapping_add((j + steps_ahead) * value_stride);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast::<i8>());
            // SAFETY: j < keys, and `values` holds TILE_COLS elements from row keys − 1.
            let (v0, v1) = unsafe {
                (
                    _mm256_loadu_ps(v.add(j * value_stride)),
                    _mm256_loadu_ps(v.add(j * value_stride + LANES)),
                )
            };
            for (sum, w) in sums.iter_mut().zip(&weights) {
                // SAFETY: j < keys = w.len().
                let w = _mm256_set1_ps(unsafe { *w.get_unchecked(j) });
                sum[0] = _mm256_fmadd_ps(w, v0, sum[0]);
                sum[1] = _mm256_fmadd_ps(w, v1, sum[1]);
            }
        }
        for (r, sum) in sums.iter().enumerate() {
            let row = acc[r * acc_stride..].as_mut_ptr();
            // SAFETY: as for the loads above.
            unsafe {
                _mm256_storeu_ps(row, sum[0]);
                _mm256_storeu_ps(row.add(LANES), sum[1]);
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn max(row: &[f32]) -> f32 {
        let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut acc = neg_inf;
        let mut chunks = row.chunks_exact(LANES);
        for chunk in &mut chunks {
            // SAFETY: the chunk has LANES elements.
            acc = _mm256_max_ps(acc, unsafe { _mm256_loadu_ps(chunk.as_ptr()) });
        }
        let tail = chunks.remainder();
        let mask = tail_mask(tail.len());
        // SAFETY: the mask covers only the tail's elements.
        let tail = unsafe { _mm256_maskload_ps(tail.as_ptr(), mask) };
        acc = _mm256_max_ps(
            acc,
            _mm256_blendv_ps(neg_inf, tail, _mm256_castsi256_ps(mask)),
        );
        let half = _mm_max_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let pair = _mm_max_ps(half, _mm_movehl_ps(half, half));
        _mm_cvtss_f32(_mm_max_ss(pair, _mm_movehdup_ps(pair)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp_shifted_in_place(row: &mut [f32], shift: f32) -> f32 {
        let shift = _mm256_set1_ps(shift);
        let mut sum = _mm256_setzero_ps();
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            let p = chunk.as_mut_ptr();
            // SAFETY: the chunk has LANES elements.
            unsafe {
                let e = exp_shifted(_mm256_loadu_ps(p), shift);
                _mm256_storeu_ps(p, e);
                sum = _mm256_add_ps(sum, e);
            }
        }
        let tail = chunks.into_remainder();
        let mask = tail_mask(tail.len());
        // SAFETY: the mask covers only the tail's elements.
        unsafe {
            let e = exp_shifted(_mm256_maskload_ps(tail.as_ptr(), mask), shift);
            let e = _mm256_and_ps(e, _mm256_castsi256_ps(mask));
            _mm256_maskstore_ps(tail.as_mut_ptr(), mask, e);
            sum = _mm256_add_ps(sum, e);
        }
        horizontal_sum(sum)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn scale(row: &mut [f32], factor: f32) {
        let factor_v = _mm256_set1_ps(factor);
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            let p = chunk.as_mut_ptr();
            // SAFETY: the chunk has LANES elements.
            unsafe { _mm256_storeu_ps(p, _mm256_mul_ps(_mm256_loadu_ps(p), factor_v)) };
        }
        chunks
            .into_remainder()
            .iter_mut()
            .for_each(|x| *x *= factor);
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn scale_into(src: &[f32], dst: &mut [f32], factor: f32) {
        assert!(src.len() == dst.len());
        let factor_v = _mm256_set1_ps(factor);
        let (mut from, mut to) = (src.chunks_exact(LANES), dst.chunks_exact_mut(LANES));
        for (f, t) in (&mut from).zip(&mut to) {
            // SAFETY: both chunks have LANES elements.
            unsafe {
                let v = _mm256_loadu_ps(f.as_ptr());
                _mm256_storeu_ps(t.as_mut_ptr(), _mm256_mul_ps(v, factor_v));
            }
        }
        for (f, t) in from.remainder().iter().zip(to.into_remainder()) {
            *t = f * factor;
        }
    }
}

/// Lanes `0..n.min(8)` set, for masked loads and stores of a row's tail.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn tail_mask(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n.min(LANES) as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// The sum of the 8 lanes, in a fixed order.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn horizontal_sum(v: __m256) -> f32 {
    let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
}
