//! The attention kernels, written once over [`F32s`]: register tiles of `ROWS` query rows
//! × `VECTORS` vectors for the scores and the context, and the row-wise softmax steps
//! between them with masked tails. [`tile_kernels!`] makes them an instruction set's
//! [`Kernels`](super::Kernels), each method a thin entry point compiled with that set's
//! features.
//!
//! Every function is `unsafe` only because it runs `V`'s instructions: the CPU must
//! support them. Each checks the bounds it relies on.

use crate::expf::exp_shifted;
use crate::simd::F32s;

/// How far ahead, in bytes, the score and context tiles prefetch the key and value panels
/// they stream. Past a few hundred tokens a head's keys and values outgrow L1, and a tile
/// step, which takes one 64- or 128-byte row of them every 6 to 12 cycles, would otherwise
/// wait on L2: prefetching 1 KiB ahead measured 7–10 % faster at 197 tokens on AVX2 and
/// 10 % faster at 3137 on both x86 sets. (NEON's prefetch is a no-op.)
const PREFETCH_AHEAD_BYTES: usize = 1024;
/// A cache line, in `f32`s: the tiles prefetch each line of a panel row.
const LINE: usize = 16;

/// Implements [`Kernels`](super::Kernels) for `$name` with the tiles below on `$v`:
/// `$rows` query rows, `$vectors` vectors of keys or value columns a tile row; the score
/// tile records that `$isa`'s attention ran (`dispatch`). Each method
/// is an entry point with `#[target_feature(enable = $features)]`, so the generic body is
/// compiled inside it with the set's own instructions.
macro_rules! tile_kernels {
    (
        $name:ident, $v:ty, $isa:expr, $features:literal, rows: $rows:literal, vectors: $vectors:literal
        $(, transpose_keys: $transpose:path)?
    ) => {
        pub(super) struct $name;

        impl $crate::attention::Kernels for $name {
            const TILE_ROWS: usize = $rows;
            const PANEL_KEYS: usize = $vectors * <$v as $crate::simd::F32s>::LANES;
            const TILE_COLS: usize = $vectors * <$v as $crate::simd::F32s>::LANES;

            $(
                #[inline]
                #[target_feature(enable = $features)]
                unsafe fn transpose_keys(
                    keys: &[f32],
                    stride: usize,
                    count: usize,
                    panel: &mut [f32],
                ) {
                    $transpose(keys, stride, count, panel)
                }
            )?

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn score_tile(
                queries: &[&[f32]],
                panel: &[f32],
                scale: f32,
                out: &mut [f32],
                stride: usize,
                rows: usize,
                cols: usize,
            ) {
                $crate::dispatch::record($crate::dispatch::Kernel::Attention, $isa);
                $crate::attention::tiles::score_tile::<$v, $rows, $vectors>(queries, panel, scale, out, stride, rows, cols)
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn context_tile(
                weights: &[&[f32]],
                values: &[f32],
                value_stride: usize,
                acc: &mut [f32],
                acc_stride: usize,
                rescale: Option<&[f32]>,
            ) {
                $crate::attention::tiles::context_tile::<$v, $rows, $vectors>(
                    weights,
                    values,
                    value_stride,
                    acc,
                    acc_stride,
                    rescale,
                )
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn max(row: &[f32]) -> f32 {
                $crate::attention::tiles::max::<$v>(row)
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn exp_shifted_in_place(row: &mut [f32], shift: f32) -> f32 {
                $crate::attention::tiles::exp_shifted_in_place::<$v>(row, shift)
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn scale(row: &mut [f32], factor: f32) {
                let p = row.as_mut_ptr();
                $crate::attention::tiles::scale_into::<$v>(p, p, row.len(), factor)
            }

            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn scale_into(src: &[f32], dst: &mut [f32], factor: f32) {
                assert!(src.len() == dst.len());
                $crate::attention::tiles::scale_into::<$v>(src.as_ptr(), dst.as_mut_ptr(), src.len(), factor)
            }
        }
    };
}
pub(super) use tile_kernels;

/// See [`Kernels::score_tile`](super::Kernels::score_tile).
#[inline(always)]
pub(super) unsafe fn score_tile<V: F32s, const ROWS: usize, const VECTORS: usize>(
    queries: &[&[f32]],
    panel: &[f32],
    scale: f32,
    out: &mut [f32],
    stride: usize,
    rows: usize,
    cols: usize,
) {
    let panel_keys = VECTORS * V::LANES;
    let queries: [&[f32]; ROWS] = queries.try_into().expect("ROWS queries");
    let head_dim = panel.len() / panel_keys;
    assert!(queries.iter().all(|q| q.len() == head_dim));
    assert!(rows > 0 && out.len() >= (rows - 1) * stride + cols && cols <= panel_keys);
    let mut acc = [[V::zero(); VECTORS]; ROWS];
    let k = panel.as_ptr();
    for c in 0..head_dim {
        // Keys PREFETCH_AHEAD_BYTES on, in this panel or the next, which follows it; a
        // prefetch never faults, wherever it points.
        let ahead = k.wrapping_add(c * panel_keys + PREFETCH_AHEAD_BYTES / 4);
        for line in (0..panel_keys).step_by(LINE) {
            V::prefetch_l1(ahead.wrapping_add(line));
        }
        let mut keys = [V::zero(); VECTORS];
        for (v, key) in keys.iter_mut().enumerate() {
            // SAFETY: c < head_dim, and the panel holds head_dim rows of panel_keys keys.
            *key = unsafe { V::load(k.add(c * panel_keys + v * V::LANES)) };
        }
        for (acc, q) in acc.iter_mut().zip(&queries) {
            // SAFETY: c < head_dim = q.len().
            let q = V::splat(unsafe { *q.get_unchecked(c) });
            for (a, &key) in acc.iter_mut().zip(&keys) {
                *a = q.fma(key, *a);
            }
        }
    }
    let scale = V::splat(scale);
    for (r, acc) in acc.iter().enumerate().take(rows) {
        let dst = out[r * stride..].as_mut_ptr();
        for (v, a) in acc.iter().enumerate() {
            let first = v * V::LANES;
            // SAFETY: row r < rows starts in `out` with at least `cols` elements after it
            // (asserted above); the tail store writes only those.
            unsafe {
                if cols == panel_keys {
                    a.mul(scale).store(dst.add(first));
                } else if first < cols {
                    let n = (cols - first).min(V::LANES);
                    a.mul(scale).store_tail(dst.add(first), n);
                }
            }
        }
    }
}

/// See [`Kernels::context_tile`](super::Kernels::context_tile).
#[inline(always)]
pub(super) unsafe fn context_tile<V: F32s, const ROWS: usize, const VECTORS: usize>(
    weights: &[&[f32]],
    values: &[f32],
    value_stride: usize,
    acc: &mut [f32],
    acc_stride: usize,
    rescale: Option<&[f32]>,
) {
    let tile_cols = VECTORS * V::LANES;
    let weights: [&[f32]; ROWS] = weights.try_into().expect("ROWS weights");
    let keys = weights[0].len();
    assert!(weights.iter().all(|w| w.len() == keys));
    assert!(keys == 0 || values.len() >= (keys - 1) * value_stride + tile_cols);
    assert!(acc.len() >= (ROWS - 1) * acc_stride + tile_cols);
    let mut sums = [[V::zero(); VECTORS]; ROWS];
    if let Some(rescale) = rescale {
        assert!(rescale.len() == ROWS);
        for (r, sum) in sums.iter_mut().enumerate() {
            let factor = V::splat(rescale[r]);
            let row = acc[r * acc_stride..].as_ptr();
            for (v, s) in sum.iter_mut().enumerate() {
                // SAFETY: each accumulator row has tile_cols elements (asserted above).
                *s = unsafe { V::load(row.add(v * V::LANES)) }.mul(factor);
            }
        }
    }
    let p = values.as_ptr();
    // A row of tile_cols values a step, prefetched PREFETCH_AHEAD_BYTES ahead.
    let steps_ahead = PREFETCH_AHEAD_BYTES / (4 * tile_cols);
    for j in 0..keys {
        let ahead = p.wrapping_add((j + steps_ahead) * value_stride);
        for line in (0..tile_cols).step_by(LINE) {
            V::prefetch_l1(ahead.wrapping_add(line));
        }
        let mut row = [V::zero(); VECTORS];
        for (v, value) in row.iter_mut().enumerate() {
            // SAFETY: j < keys, and `values` holds tile_cols elements from row keys − 1.
            *value = unsafe { V::load(p.add(j * value_stride + v * V::LANES)) };
        }
        for (sum, w) in sums.iter_mut().zip(&weights) {
            // SAFETY: j < keys = w.len().
            let w = V::splat(unsafe { *w.get_unchecked(j) });
            for (s, &value) in sum.iter_mut().zip(&row) {
                *s = w.fma(value, *s);
            }
        }
    }
    for (r, sum) in sums.iter().enumerate() {
        let row = acc[r * acc_stride..].as_mut_ptr();
        for (v, s) in sum.iter().enumerate() {
            // SAFETY: as for the loads above.
            unsafe { s.store(row.add(v * V::LANES)) };
        }
    }
}

/// See [`Kernels::max`](super::Kernels::max); two accumulators, the tail read as −∞.
#[inline(always)]
pub(super) unsafe fn max<V: F32s>(row: &[f32]) -> f32 {
    let neg_inf = V::splat(f32::NEG_INFINITY);
    let mut acc = [neg_inf; 2];
    let mut pairs = row.chunks_exact(2 * V::LANES);
    for pair in &mut pairs {
        // SAFETY: the pair has 2·LANES elements.
        unsafe {
            acc[0] = acc[0].max(V::load(pair.as_ptr()));
            acc[1] = acc[1].max(V::load(pair.as_ptr().add(V::LANES)));
        }
    }
    for (k, part) in pairs.remainder().chunks(V::LANES).enumerate() {
        // SAFETY: only the part's elements are read; the other lanes read as −∞.
        let v = unsafe { V::load_tail_or(part.as_ptr(), part.len(), neg_inf) };
        acc[k] = acc[k].max(v);
    }
    acc[0].max(acc[1]).reduce_max()
}

/// See [`Kernels::exp_shifted_in_place`](super::Kernels::exp_shifted_in_place); the tail
/// in one masked vector whose other lanes add 0.
#[inline(always)]
pub(super) unsafe fn exp_shifted_in_place<V: F32s>(row: &mut [f32], shift: f32) -> f32 {
    let shift = V::splat(shift);
    let mut sum = V::zero();
    let mut chunks = row.chunks_exact_mut(V::LANES);
    for chunk in &mut chunks {
        let p = chunk.as_mut_ptr();
        // SAFETY: the chunk has LANES elements.
        unsafe {
            let e = exp_shifted(V::load(p), shift);
            e.store(p);
            sum = sum.add(e);
        }
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let (p, n) = (tail.as_mut_ptr(), tail.len());
        // SAFETY: only the tail's n elements are read and written.
        unsafe {
            let e = exp_shifted(V::load_tail(p, n), shift).keep_first(n);
            e.store_tail(p, n);
            sum = sum.add(e);
        }
    }
    sum.reduce_sum()
}

/// `dst[..len] = src[..len] · factor`, the tail in one masked vector; `src` may be `dst`.
///
/// # Safety
/// Also: `src` valid for `len` reads and `dst` for `len` writes.
#[inline(always)]
pub(super) unsafe fn scale_into<V: F32s>(src: *const f32, dst: *mut f32, len: usize, factor: f32) {
    let factor = V::splat(factor);
    let whole = len / V::LANES * V::LANES;
    for i in (0..whole).step_by(V::LANES) {
        // SAFETY: i + LANES ≤ len.
        unsafe { V::load(src.add(i)).mul(factor).store(dst.add(i)) };
    }
    if whole < len {
        let n = len - whole;
        // SAFETY: only elements whole..len are read and written.
        unsafe {
            V::load_tail(src.add(whole), n)
                .mul(factor)
                .store_tail(dst.add(whole), n)
        };
    }
}
