//! The AVX2+FMA micro-kernel: a 6×16 tile in twelve ymm accumulators.

use std::arch::x86_64::*;

use super::{GemmKernel, Panels, TileEpilogue};
use crate::activation::avx2::apply_all;

pub(crate) struct Avx2Fma;

const MR: usize = 6;
const NR: usize = 16;

impl GemmKernel for Avx2Fma {
    /// 6×16: 12 of the 16 ymm registers accumulate, two hold a step of B and one a
    /// broadcast of A. Each step issues 12 FMAs against 8 loads, and 12 independent
    /// accumulators cover the FMA latency (4 cycles × 2 pipes).
    const MR: usize = MR;
    const NR: usize = NR;
    /// A 256×16 B panel is 16 KiB, half of Zen 3's 32 KiB L1d; the 6 KiB A panel and the
    /// C tile fit beside it.
    const KC: usize = 256;
    /// A 198×256 A block is 198 KiB, under half of Zen 3's 512 KiB L2, so it stays there
    /// while the B panels stream through; 198 rows hold one 197-token image.
    const MC: usize = 198;
    /// B blocks of up to 4096 columns: ViT's widest weight, 3072×768, is 9 MiB, so a task
    /// sweeps all of it and still leaves most of the L3.
    const NC: usize = 4096;

    unsafe fn kernel(
        panels: Panels,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        accumulate: bool,
        epilogue: Option<&TileEpilogue>,
    ) {
        // SAFETY: the caller guarantees AVX2+FMA and the operands, as kernel_6x16 needs.
        unsafe { kernel_6x16(panels, c, ldc, rows, accumulate, epilogue) }
    }
}

/// # Safety
/// As `GemmKernel::kernel`.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_6x16(
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
            _mm_prefetch::<_MM_HINT_T0>(row);
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(NR * 4 - 1));
        }
    }
    // One step: the outer product of A's column p (MR values) and B's row p (NR values).
    let step = |mut acc: [[__m256; 2]; MR], p: usize| {
        // SAFETY: step p of each panel lies within the A rows and NR·depth values the
        // caller guarantees.
        unsafe {
            let b_lo = _mm256_loadu_ps(b.add(p * NR));
            let b_hi = _mm256_loadu_ps(b.add(p * NR + 8));
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let a_value = _mm256_broadcast_ss(&*a.add(r * a_stride + p));
                acc_row[0] = _mm256_fmadd_ps(a_value, b_lo, acc_row[0]);
                acc_row[1] = _mm256_fmadd_ps(a_value, b_hi, acc_row[1]);
            }
        }
        acc
    };
    // Unrolled so that the six row addresses of A are computed once per eight steps.
    let unrolled = depth - depth % 8;
    let mut sums = [[_mm256_setzero_ps(); 2]; MR];
    for p in (0..unrolled).step_by(8) {
        // Two lines of what a later call reads, per eight steps: `depth·16` bytes in all.
        if !prefetch.is_null() {
            let ahead = prefetch.wrapping_add(p * 4).cast::<i8>();
            _mm_prefetch::<_MM_HINT_T1>(ahead);
            _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64));
        }
        sums = (p..p + 8).fold(sums, step);
    }
    sums = (unrolled..depth).fold(sums, step);
    // The epilogue works on a copy: it passes the tile's address to `apply_all`, and a
    // tile whose address is taken is stored to the stack on every step of the loop.
    let mut acc = sums;
    // SAFETY: the tile's first `rows` rows lie in C, which the caller vouches for.
    let row = |r: usize, half: usize| unsafe { c.add(r * ldc + half * 8) };
    if accumulate {
        for (r, acc_row) in acc.iter_mut().enumerate().take(rows) {
            for (half, sum) in acc_row.iter_mut().enumerate() {
                // SAFETY: as for `row`.
                *sum = _mm256_add_ps(unsafe { _mm256_loadu_ps(row(r, half)) }, *sum);
            }
        }
    }
    if let Some(e) = epilogue {
        if let Some(bias) = e.bias {
            // SAFETY: the caller guarantees NR bias values.
            let bias = unsafe { [_mm256_loadu_ps(bias), _mm256_loadu_ps(bias.add(8))] };
            for acc_row in &mut acc {
                acc_row[0] = _mm256_add_ps(acc_row[0], bias[0]);
                acc_row[1] = _mm256_add_ps(acc_row[1], bias[1]);
            }
        }
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe { apply_all(e.activation, acc.as_flattened_mut()) };
        if let Some(residual) = residual {
            for (r, acc_row) in acc.iter_mut().enumerate().take(rows) {
                for (half, sum) in acc_row.iter_mut().enumerate() {
                    // SAFETY: the residual has C's tile shape and stride.
                    *sum = _mm256_add_ps(*sum, unsafe {
                        _mm256_loadu_ps(residual.add(r * ldc + half * 8))
                    });
                }
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate().take(rows) {
        for (half, &sum) in acc_row.iter().enumerate() {
            // SAFETY: as for `row`.
            unsafe { _mm256_storeu_ps(row(r, half), sum) };
        }
    }
}
