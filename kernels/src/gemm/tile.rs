//! The SIMD micro-kernel, written once over [`F32s`]: an `MR × NV` tile of vectors summed
//! over a K block, then (on x86) finished in registers. Each instruction set's
//! [`GemmKernel`](super::GemmKernel) calls it from a thin `#[target_feature]` entry point
//! with its own tile shape.
//!
//! Every function is `unsafe` because it runs `V`'s instructions (the CPU must support
//! them) and because of the pointer contract of [`GemmKernel::kernel`](super::GemmKernel::kernel).

use super::Panels;
#[cfg(target_arch = "x86_64")]
use super::TileEpilogue;
#[cfg(target_arch = "x86_64")]
use crate::activation::apply_all;
use crate::simd::F32s;
#[cfg(target_arch = "x86_64")]
use crate::simd::Transcendental;

/// A cache line, in `f32`s.
const LINE: usize = 16;

/// The `MR × NV·LANES` tile `a·b` over the panels' depth, in registers. The K loop is
/// unrolled `UNROLL` steps (a multiple of 4) so that the row addresses of A are computed
/// once per `UNROLL` steps, and asks L2 for one line of `panels.prefetch` per four steps:
/// `depth·16` bytes in all.
///
/// # Safety
/// As [`GemmKernel::kernel`](super::GemmKernel::kernel), for `V`'s instruction set.
#[inline(always)]
pub(super) unsafe fn multiply<V: F32s, const MR: usize, const NV: usize, const UNROLL: usize>(
    panels: Panels,
) -> [[V; NV]; MR] {
    let Panels {
        depth,
        a,
        a_stride,
        b,
        prefetch,
    } = panels;
    let unrolled = depth - depth % UNROLL;
    let mut sums = [[V::zero(); NV]; MR];
    for p in (0..unrolled).step_by(UNROLL) {
        if !prefetch.is_null() {
            let ahead = prefetch.wrapping_add(p * 4);
            for line in 0..UNROLL / 4 {
                V::prefetch_l2(ahead.wrapping_add(line * LINE));
            }
        }
        for p in p..p + UNROLL {
            sums = step(sums, a, a_stride, b, p);
        }
    }
    for p in unrolled..depth {
        sums = step(sums, a, a_stride, b, p);
    }
    sums
}

/// One step: the outer product of A's column `p` (`MR` values) and B's row `p`
/// (`NV·LANES` values), added to `acc`. A's values are broadcast straight from memory.
#[inline(always)]
unsafe fn step<V: F32s, const MR: usize, const NV: usize>(
    mut acc: [[V; NV]; MR],
    a: *const f32,
    a_stride: usize,
    b: *const f32,
    p: usize,
) -> [[V; NV]; MR] {
    let nr = NV * V::LANES;
    let mut b_step = [V::zero(); NV];
    for (v, b_v) in b_step.iter_mut().enumerate() {
        // SAFETY: step p of the B panel holds nr values, which the caller guarantees.
        *b_v = unsafe { V::load(b.add(p * nr + v * V::LANES)) };
    }
    for (r, acc_row) in acc.iter_mut().enumerate() {
        // SAFETY: p < depth, and the caller guarantees MR rows of depth values of A.
        let a_value = V::splat(unsafe { *a.add(r * a_stride + p) });
        for (sum, &b_v) in acc_row.iter_mut().zip(&b_step) {
            *sum = a_value.fma(b_v, *sum);
        }
    }
    acc
}

/// The whole micro-kernel with the epilogue in registers: starts fetching the C (and
/// residual) tile, which are needed only after the K loop, runs [`multiply`], then adds
/// C when `accumulate`, and applies the epilogue with the vectorised activations.
///
/// # Safety
/// As [`GemmKernel::kernel`](super::GemmKernel::kernel), for `V`'s instruction set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn kernel<
    V: Transcendental,
    const MR: usize,
    const NV: usize,
    const UNROLL: usize,
>(
    panels: Panels,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    accumulate: bool,
    epilogue: Option<&TileEpilogue>,
) {
    let nr = NV * V::LANES;
    let residual = epilogue.and_then(|e| e.residual);
    for tile in std::iter::once(c.cast_const()).chain(residual) {
        for r in 0..rows {
            // Every line of the row, and its last value in case the row is not aligned.
            let row = tile.wrapping_add(r * ldc);
            for line in (0..nr).step_by(LINE) {
                V::prefetch_l1(row.wrapping_add(line));
            }
            V::prefetch_l1(row.wrapping_add(nr - 1));
        }
    }
    let sums = multiply::<V, MR, NV, UNROLL>(panels);
    // The epilogue works on a copy: it passes the tile's address to `apply_all`, and a
    // tile whose address is taken is stored to the stack on every step of the loop.
    let mut acc = sums;
    // SAFETY: the tile's first `rows` rows lie in C, which the caller vouches for.
    let at = |r: usize, v: usize| unsafe { c.add(r * ldc + v * V::LANES) };
    if accumulate {
        for (r, acc_row) in acc.iter_mut().enumerate().take(rows) {
            for (v, sum) in acc_row.iter_mut().enumerate() {
                // SAFETY: as for `at`.
                *sum = unsafe { V::load(at(r, v)) }.add(*sum);
            }
        }
    }
    if let Some(e) = epilogue {
        if let Some(bias) = e.bias {
            let mut bias_v = [V::zero(); NV];
            for (v, b_v) in bias_v.iter_mut().enumerate() {
                // SAFETY: the caller guarantees nr bias values.
                *b_v = unsafe { V::load(bias.add(v * V::LANES)) };
            }
            for acc_row in &mut acc {
                for (sum, &b_v) in acc_row.iter_mut().zip(&bias_v) {
                    *sum = sum.add(b_v);
                }
            }
        }
        apply_all(e.activation, acc.as_flattened_mut());
        if let Some(residual) = residual {
            for (r, acc_row) in acc.iter_mut().enumerate().take(rows) {
                for (v, sum) in acc_row.iter_mut().enumerate() {
                    // SAFETY: the residual has C's tile shape and stride.
                    *sum = sum.add(unsafe { V::load(residual.add(r * ldc + v * V::LANES)) });
                }
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate().take(rows) {
        for (v, &sum) in acc_row.iter().enumerate() {
            // SAFETY: as for `at`.
            unsafe { sum.store(at(r, v)) };
        }
    }
}
