//! The SIMD micro-kernels, written once over [`F32s`] (and [`Bf16Dot`], [`I8Dot`] for the
//! reduced-precision products): an `MR × NV` tile of vectors summed over a K block, then
//! (on x86) finished in registers. Each instruction set's
//! [`GemmKernel`](super::GemmKernel) calls them from a thin `#[target_feature]` entry point
//! with its own tile shape.
//!
//! Every function is `unsafe` because it runs `V`'s instructions (the CPU must support
//! them) and because of the pointer contract of [`GemmKernel::kernel`](super::GemmKernel::kernel).

#[cfg(target_arch = "x86_64")]
use super::TileEpilogue;
use super::{FloatValue, Panels};
#[cfg(target_arch = "x86_64")]
use crate::activation::apply_all;
use crate::simd::F32s;
#[cfg(target_arch = "x86_64")]
use crate::simd::{Bf16Dot, I8Dot, Transcendental};

/// A cache line, in bytes.
const LINE: usize = 64;

/// Asks L2 for the line of the prefetch slice that depths `p..p + 4` cover (16 bytes
/// per depth), when there is a slice.
#[inline(always)]
fn prefetch_depths<V: F32s>(prefetch: *const u8, p: usize) {
    if !prefetch.is_null() {
        V::prefetch_l2(prefetch.wrapping_add(p * 16).cast());
    }
}

/// The `MR × NV·LANES` tile `a·b` over the panels' depth, in registers, with B's values
/// widened to `f32` as they load. The K loop is unrolled `UNROLL` steps (a multiple of 4)
/// so that the row addresses of A are computed once per `UNROLL` steps, and asks L2 for
/// one line of `panels.prefetch` per four steps: `depth·16` bytes in all.
///
/// # Safety
/// As [`GemmKernel::kernel`](super::GemmKernel::kernel), for `V`'s instruction set.
#[inline(always)]
pub(super) unsafe fn multiply<
    V: F32s,
    B: FloatValue,
    const MR: usize,
    const NV: usize,
    const UNROLL: usize,
>(
    panels: Panels<f32, B>,
) -> [[V; NV]; MR] {
    let Panels {
        depth,
        a,
        a_stride,
        b,
        prefetch,
        ..
    } = panels;
    let unrolled = depth - depth % UNROLL;
    let mut sums = [[V::zero(); NV]; MR];
    for p in (0..unrolled).step_by(UNROLL) {
        for line in (p..p + UNROLL).step_by(4) {
            prefetch_depths::<V>(prefetch, line);
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
unsafe fn step<V: F32s, B: FloatValue, const MR: usize, const NV: usize>(
    mut acc: [[V; NV]; MR],
    a: *const f32,
    a_stride: usize,
    b: *const B,
    p: usize,
) -> [[V; NV]; MR] {
    let nr = NV * V::LANES;
    let mut b_step = [V::zero(); NV];
    for (v, b_v) in b_step.iter_mut().enumerate() {
        // SAFETY: step p of the B panel holds nr values, which the caller guarantees.
        *b_v = unsafe { B::load(b.add(p * nr + v * V::LANES)) };
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

/// The whole float micro-kernel with the epilogue in registers: [`prefetch_tile`],
/// [`multiply`], [`finish`].
///
/// # Safety
/// As [`GemmKernel::kernel`](super::GemmKernel::kernel), for `V`'s instruction set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn kernel<
    V: Transcendental,
    B: FloatValue,
    const MR: usize,
    const NV: usize,
    const UNROLL: usize,
>(
    panels: Panels<f32, B>,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    accumulate: bool,
    epilogue: Option<&TileEpilogue>,
) {
    prefetch_tile::<V>(c, ldc, rows, NV * V::LANES, epilogue);
    let sums = multiply::<V, B, MR, NV, UNROLL>(panels);
    finish(sums, c, ldc, rows, accumulate, epilogue);
}

/// Starts fetching the C (and residual) tile, which [`finish`] needs only after the K
/// loop.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn prefetch_tile<V: F32s>(
    c: *mut f32,
    ldc: usize,
    rows: usize,
    nr: usize,
    epilogue: Option<&TileEpilogue>,
) {
    let residual = epilogue.and_then(|e| e.residual);
    for tile in std::iter::once(c.cast_const()).chain(residual) {
        for r in 0..rows {
            // Every line of the row, and its last value in case the row is not aligned.
            let row = tile.wrapping_add(r * ldc);
            for line in (0..nr).step_by(LINE / 4) {
                V::prefetch_l1(row.wrapping_add(line));
            }
            V::prefetch_l1(row.wrapping_add(nr - 1));
        }
    }
}

/// Finishes a summed tile: adds C when `accumulate`, applies the epilogue with the
/// vectorised activations, and stores the first `rows` rows.
///
/// # Safety
/// As [`GemmKernel::kernel`](super::GemmKernel::kernel), for `V`'s instruction set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn finish<V: Transcendental, const MR: usize, const NV: usize>(
    sums: [[V; NV]; MR],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    accumulate: bool,
    epilogue: Option<&TileEpilogue>,
) {
    let residual = epilogue.and_then(|e| e.residual);
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

/// The `MR × NV·LANES` tile `a·b` of bf16 pairs over the panels' depth (even), summed in
/// `f32` by `vdpbf16ps`: each step takes two depths, a pair of A's values broadcast
/// against `NV` vectors of B's pairs.
///
/// # Safety
/// As [`GemmKernel::kernel`](super::GemmKernel::kernel), for `V`'s instruction set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn multiply_bf16<V: Bf16Dot, const MR: usize, const NV: usize>(
    panels: Panels<u16, u16>,
) -> [[V; NV]; MR] {
    let Panels {
        depth,
        a,
        a_stride,
        b,
        prefetch,
        ..
    } = panels;
    let step_values = 2 * NV * V::LANES;
    let mut sums = [[V::zero(); NV]; MR];
    for p in (0..depth).step_by(2) {
        if p % 4 == 0 {
            prefetch_depths::<V>(prefetch, p);
        }
        let b_step: [V::Pairs; NV] = std::array::from_fn(|v| {
            // SAFETY: pair step p/2 of the B panel holds 2·NV·LANES values.
            unsafe { V::load_pairs(b.add(p / 2 * step_values + v * 2 * V::LANES)) }
        });
        for (r, row) in sums.iter_mut().enumerate() {
            // SAFETY: p + 1 < depth, and the caller guarantees MR rows of depth values.
            let a_pair = unsafe { V::splat_pair(a.add(r * a_stride + p)) };
            for (sum, &b_v) in row.iter_mut().zip(&b_step) {
                *sum = sum.dot_pairs(a_pair, b_v);
            }
        }
    }
    sums
}

/// The `MR × NV·LANES` tile `a·b` of 8-bit values over the panels' depth (a multiple of
/// `V::GROUP`), summed exactly in `i32`, then dequantized with `panels.dequant`: for row
/// `r` and column `j`, `a_scale[r] · b_scale[j] · (sum − a_zero[r] · b_sum[j])`, in
/// that order of rounding (the reference's).
///
/// # Safety
/// As [`GemmKernel::kernel`](super::GemmKernel::kernel), for `V`'s instruction set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn multiply_int8<V: I8Dot, const MR: usize, const NV: usize>(
    panels: Panels<u8, i8>,
) -> [[V; NV]; MR] {
    let Panels {
        depth,
        a,
        a_stride,
        b,
        prefetch,
        dequant,
    } = panels;
    let group = V::GROUP;
    let step_values = group * NV * V::LANES;
    let mut sums = [[V::zero_ints(); NV]; MR];
    for p in (0..depth).step_by(group) {
        if p % 4 == 0 {
            prefetch_depths::<V>(prefetch, p);
        }
        let b_step: [V::Ints; NV] = std::array::from_fn(|v| {
            // SAFETY: group step p/group of the B panel holds group·NV·LANES values.
            unsafe { V::load_groups(b.add(p / group * step_values + v * group * V::LANES)) }
        });
        for (r, row) in sums.iter_mut().enumerate() {
            // SAFETY: p + group ≤ depth, and the caller guarantees MR rows of depth values.
            let a_group = unsafe { V::splat_group(a.add(r * a_stride + p)) };
            for (sum, &b_v) in row.iter_mut().zip(&b_step) {
                *sum = V::dot_groups(*sum, a_group, b_v);
            }
        }
    }
    // SAFETY: the caller guarantees MR row and NR column entries of dequant.
    unsafe {
        let b_scales: [V; NV] = std::array::from_fn(|v| V::load(dequant.b_scale.add(v * V::LANES)));
        std::array::from_fn(|r| {
            let row = *dequant.a.add(r);
            let a_scale = V::splat(row.scale);
            std::array::from_fn(|v| {
                let exact = V::sub_scaled(sums[r][v], row.zero, dequant.b_sum.add(v * V::LANES));
                V::ints_to_f32(exact).mul(a_scale.mul(b_scales[v]))
            })
        })
    }
}
