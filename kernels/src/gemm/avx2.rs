//! The AVX2+FMA micro-kernel: a 6×16 tile in twelve ymm accumulators, the shared
//! [`tile::kernel`] on [`simd::Avx2`](crate::simd::Avx2).

use super::{tile, GemmKernel, Panels, TileEpilogue};
use crate::dispatch::{record, Kernel};
use crate::simd;
use crate::Isa;

pub(crate) struct Avx2Fma;

const MR: usize = 6;
/// Columns of the tile, in ymm vectors of 8.
const NV: usize = 2;
const NR: usize = 8 * NV;

impl GemmKernel for Avx2Fma {
    /// 6×16: 12 of the 16 ymm registers accumulate, two hold a step of B and one a
    /// broadcast of A. Each step issues 12 FMAs against 8 loads, and 12 independent
    /// accumulators cover the FMA latency (4 cycles × 2 pipes). The K loop is unrolled by
    /// 8, so that the six row addresses of A are computed once per eight steps.
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
    record(Kernel::Gemm, Isa::Avx2Fma);
    tile::kernel::<simd::Avx2, MR, NV, 8>(panels, c, ldc, rows, accumulate, epilogue)
}
