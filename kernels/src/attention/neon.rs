//! NEON attention kernels: the tiles of the AVX2 version in 4-lane vectors (24 of the 32
//! registers hold a tile's accumulators).

use std::arch::aarch64::*;

use super::Kernels;
use crate::expf::neon::exp_shifted;

/// Query rows of one register tile.
const TILE_ROWS: usize = 6;
/// Keys per packed key panel, the width of one score tile.
const PANEL_KEYS: usize = 16;
/// Value columns per context tile.
const TILE_COLS: usize = 16;

const LANES: usize = 4;
/// Vectors per 16-wide tile row.
const VECTORS: usize = PANEL_KEYS / LANES;

/// The NEON kernels.
pub(super) struct Neon;

impl Kernels for Neon {
    const TILE_ROWS: usize = TILE_ROWS;
    const PANEL_KEYS: usize = PANEL_KEYS;
    const TILE_COLS: usize = TILE_COLS;

    #[inline]
    #[target_feature(enable = "neon")]
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
        let mut acc = [[vdupq_n_f32(0.0); VECTORS]; TILE_ROWS];
        for (c, keys) in panel.chunks_exact(PANEL_KEYS).enumerate() {
            // SAFETY: each load reads LANES of the chunk's PANEL_KEYS elements.
            let k: [float32x4_t; VECTORS] =
                std::array::from_fn(|v| unsafe { vld1q_f32(keys.as_ptr().add(v * LANES)) });
            for (acc, q) in acc.iter_mut().zip(&queries) {
                // SAFETY: c < head_dim = q.len().
                let q = unsafe { *q.get_unchecked(c) };
                for (a, k) in acc.iter_mut().zip(k) {
                    *a = vfmaq_n_f32(*a, k, q);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(rows) {
            let mut scaled = [0.0f32; PANEL_KEYS];
            for (v, a) in acc.iter().enumerate() {
                // SAFETY: `scaled` holds VECTORS·LANES elements.
                unsafe { vst1q_f32(scaled.as_mut_ptr().add(v * LANES), vmulq_n_f32(*a, scale)) };
            }
            out[r * stride..][..cols].copy_from_slice(&scaled[..cols]);
        }
    }

    #[inline]
    #[target_feature(enable = "neon")]
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
        let mut sums = [[vdupq_n_f32(0.0); VECTORS]; TILE_ROWS];
        if let Some(rescale) = rescale {
            assert!(rescale.len() == TILE_ROWS);
            for (r, sum) in sums.iter_mut().enumerate() {
                let row = &acc[r * acc_stride..][..TILE_COLS];
                for (v, s) in sum.iter_mut().enumerate() {
                    // SAFETY: the row has TILE_COLS = VECTORS·LANES elements.
                    *s = vmulq_n_f32(
                        unsafe { vld1q_f32(row.as_ptr().add(v * LANES)) },
                        rescale[r],
                    );
                }
            }
        }
        let values = values.as_ptr();
        for j in 0..keys {
            // SAFETY: j < keys, and `values` holds TILE_COLS elements from row keys − 1.
            let v: [float32x4_t; VECTORS] = std::array::from_fn(|v| unsafe {
                vld1q_f32(values.add(j * value_stride + v * LANES))
            });
            for (sum, w) in sums.iter_mut().zip(&weights) {
                // SAFETY: j < keys = w.len().
                let w = unsafe { *w.get_unchecked(j) };
                for (s, v) in sum.iter_mut().zip(v) {
                    *s = vfmaq_n_f32(*s, v, w);
                }
            }
        }
        for (r, sum) in sums.iter().enumerate() {
            let row = &mut acc[r * acc_stride..][..TILE_COLS];
            for (v, s) in sum.iter().enumerate() {
                // SAFETY: the row has TILE_COLS = VECTORS·LANES elements.
                unsafe { vst1q_f32(row.as_mut_ptr().add(v * LANES), *s) };
            }
        }
    }

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn max(row: &[f32]) -> f32 {
        let mut acc = vdupq_n_f32(f32::NEG_INFINITY);
        let mut chunks = row.chunks_exact(LANES);
        for chunk in &mut chunks {
            // SAFETY: the chunk has LANES elements.
            acc = vmaxq_f32(acc, unsafe { vld1q_f32(chunk.as_ptr()) });
        }
        chunks
            .remainder()
            .iter()
            .fold(vmaxvq_f32(acc), |m, &x| m.max(x))
    }

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn exp_shifted_in_place(row: &mut [f32], shift: f32) -> f32 {
        let shift = vdupq_n_f32(shift);
        let mut sum = vdupq_n_f32(0.0);
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            let p = chunk.as_mut_ptr();
            // SAFETY: the chunk has LANES elements.
            unsafe {
                let e = exp_shifted(vld1q_f32(p), shift);
                vst1q_f32(p, e);
                sum = vaddq_f32(sum, e);
            }
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            // Lanes past the tail hold −∞, whose exp adds 0 to the sum.
            let mut lanes = [f32::NEG_INFINITY; LANES];
            lanes[..tail.len()].copy_from_slice(tail);
            // SAFETY: `lanes` has LANES elements.
            unsafe {
                let e = exp_shifted(vld1q_f32(lanes.as_ptr()), shift);
                vst1q_f32(lanes.as_mut_ptr(), e);
                sum = vaddq_f32(sum, e);
            }
            tail.copy_from_slice(&lanes[..tail.len()]);
        }
        vaddvq_f32(sum)
    }

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn scale(row: &mut [f32], factor: f32) {
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            let p = chunk.as_mut_ptr();
            // SAFETY: the chunk has LANES elements.
            unsafe { vst1q_f32(p, vmulq_n_f32(vld1q_f32(p), factor)) };
        }
        chunks
            .into_remainder()
            .iter_mut()
            .for_each(|x| *x *= factor);
    }

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn scale_into(src: &[f32], dst: &mut [f32], factor: f32) {
        assert!(src.len() == dst.len());
        let (mut from, mut to) = (src.chunks_exact(LANES), dst.chunks_exact_mut(LANES));
        for (f, t) in (&mut from).zip(&mut to) {
            // SAFETY: both chunks have LANES elements.
            unsafe { vst1q_f32(t.as_mut_ptr(), vmulq_n_f32(vld1q_f32(f.as_ptr()), factor)) };
        }
        for (f, t) in from.remainder().iter().zip(to.into_remainder()) {
            *t = f * factor;
        }
    }
}
