//! The AVX-512F micro-kernel: a 6×64 tile in 24 zmm accumulators.

use std::arch::x86_64::*;

use super::{GemmKernel, Panels, TileEpilogue};
use crate::activation::avx512::apply_all;

pub(crate) struct Avx512;

/// Rows of the tile.
const MR: usize = 6;
/// Columns of the tile, in zmm vectors of 16.
const NV: usize = 4;
const NR: usize = 16 * NV;

impl GemmKernel for Avx512 {
    /// 6×64: 24 of the 32 zmm registers accumulate, four hold a step of B, and A's values
    /// are broadcast straight from memory into the FMAs. Each step issues 24 FMAs (12
    /// cycles on the two FMA ports) against 4 + 6 loads, and 24 independent accumulators
    /// cover the 4-cycle FMA latency three times over. Measured against 12×32, 14×32, 8×32,
    /// 8×48, 9×48, 7×64 and 4×96 on ViT's shapes it was fastest with 8×48, and it wastes
    /// least on 197-token rows: 33 panels of 6 cover 198 rows, and split 17/16 over two
    /// threads. ViT's widths (384·i) are all multiples of 64.
    const MR: usize = MR;
    const NR: usize = NR;
    /// Deep K blocks, for Sapphire Rapids' 2 MiB L2 per core rather than its 48 KiB L1d:
    /// the 192 KiB B panel (768×64) stays in L2 while the task's 18 KiB A panels (6×768)
    /// pass against it, and each kernel call streams both from L2, 24 + 256 bytes per
    /// 12-cycle step, which the L2 prefetchers sustain. One block covers ViT-B's K of 768,
    /// so C is read back only for K = 1536 and 3072 (once and three times, not 3 and 7
    /// times as at KC = 384), and the per-call overhead is spread over twice the depth.
    /// It measured 2–5% faster than 384 or 512 on the large shapes. With A read in place,
    /// an L1-sized KC of 128 measured 0–14 points of peak lower (median 6) on ViT-S's
    /// shapes, and 192 up to 6 lower.
    const KC: usize = 768;
    /// A task's rows of A, 198×768×4 B = 594 KiB, plus the B panel stay within the 2 MiB
    /// L2 while the B panels stream past it; 198 rows hold one 197-token image. Taller
    /// blocks (480, 672) measured no faster on the batched shapes.
    const MC: usize = 198;
    /// B blocks of up to 4096 columns: ViT's widest weight, 3072×768, is 9 MiB, so a task
    /// sweeps all of it.
    const NC: usize = 4096;

    unsafe fn kernel(
        panels: Panels,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        accumulate: bool,
        epilogue: Option<&TileEpilogue>,
    ) {
        // SAFETY: the caller guarantees AVX-512F and the operands, as `kernel_6x64` needs.
        unsafe { kernel_6x64(panels, c, ldc, rows, accumulate, epilogue) }
    }
}

/// # Safety
/// As `GemmKernel::kernel`.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn kernel_6x64(
    panels: Panels,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    accumulate: bool,
    epilogue: Option<&TileEpilogue>,
) {
    let Panels {
        depth,
        a,
        a_stride,
        b,
        prefetch,
    } = panels;
    // Start fetching the C (and residual) tile now: they are needed only after the K loop.
    let residual = epilogue.and_then(|e| e.residual);
    for tile in std::iter::once(c.cast_const()).chain(residual) {
        for r in 0..rows {
            let row = tile.wrapping_add(r * ldc).cast::<i8>();
            for v in 0..NV {
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(v * 64));
            }
        }
    }
    // One step: the outer product of A's column p (MR values) and B's row p (NR values).
    let step = |mut acc: [[__m512; NV]; MR], p: usize| {
        // SAFETY: step p of each panel lies within the A rows and NR·depth values the
        // caller guarantees.
        unsafe {
            let b_step: [__m512; NV] =
                std::array::from_fn(|v| _mm512_loadu_ps(b.add(p * NR + v * 16)));
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let a_value = _mm512_set1_ps(*a.add(r * a_stride + p));
                for (sum, &b_v) in acc_row.iter_mut().zip(&b_step) {
                    *sum = _mm512_fmadd_ps(a_value, b_v, *sum);
                }
            }
        }
        acc
    };
    let unrolled = depth - depth % 4;
    let mut sums = [[_mm512_setzero_ps(); NV]; MR];
    for p in (0..unrolled).step_by(4) {
        // One line of what a later call reads, per four steps: `depth·16` bytes in all.
        if !prefetch.is_null() {
            _mm_prefetch::<_MM_HINT_T1>(prefetch.wrapping_add(p * 4).cast::<i8>());
        }
        sums = (p..p + 4).fold(sums, step);
    }
    sums = (unrolled..depth).fold(sums, step);
    // The epilogue works on a copy: it passes the tile's address to `apply_all`, and a
    // tile whose address is taken is stored to the stack on every step of the loop.
    let mut acc = sums;
    // SAFETY: the tile's first `rows` rows lie in C, which the caller vouches for.
    let at = |r: usize, v: usize| unsafe { c.add(r * ldc + v * 16) };
    if accumulate {
        for (r, acc_row) in acc.iter_mut().enumerate().take(rows) {
            for (v, sum) in acc_row.iter_mut().enumerate() {
                // SAFETY: as for `at`.
                *sum = _mm512_add_ps(unsafe { _mm512_loadu_ps(at(r, v)) }, *sum);
            }
        }
    }
    if let Some(e) = epilogue {
        if let Some(bias) = e.bias {
            // SAFETY: the caller guarantees NR bias values.
            let bias: [__m512; NV] =
                std::array::from_fn(|v| unsafe { _mm512_loadu_ps(bias.add(v * 16)) });
            for acc_row in &mut acc {
                for (sum, &b_v) in acc_row.iter_mut().zip(&bias) {
                    *sum = _mm512_add_ps(*sum, b_v);
                }
            }
        }
        // SAFETY: the CPU has AVX-512F, AVX2 and FMA.
        unsafe { apply_all(e.activation, acc.as_flattened_mut()) };
        if let Some(residual) = residual {
            for (r, acc_row) in acc.iter_mut().enumerate().take(rows) {
                for (v, sum) in acc_row.iter_mut().enumerate() {
                    // SAFETY: the residual has C's tile shape and stride.
                    *sum = _mm512_add_ps(*sum, unsafe {
                        _mm512_loadu_ps(residual.add(r * ldc + v * 16))
                    });
                }
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate().take(rows) {
        for (v, &sum) in acc_row.iter().enumerate() {
            // SAFETY: as for `at`.
            unsafe { _mm512_storeu_ps(at(r, v), sum) };
        }
    }
}
