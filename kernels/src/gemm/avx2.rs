//! The AVX2+FMA micro-kernel: a 6×16 tile in twelve ymm accumulators, the shared
//! [`tile::kernel`] on [`simd::Avx2`](crate::simd::Avx2).

use std::marker::PhantomData;

use super::{tile, FloatValue, GemmKernel, Panels, TileEpilogue};
use crate::dispatch::{record, Kernel};
use crate::simd;
use crate::Isa;

/// The f32 kernel, on weights of `B` (f32, or bf16 widened).
pub(crate) struct Avx2Fma<B = f32>(PhantomData<B>);

const MR: usize = 6;
/// Columns of the tile, in ymm vectors of 8.
const NV: usize = 2;
const NR: usize = 8 * NV;

impl<B: FloatValue> GemmKernel for Avx2Fma<B> {
    type A = f32;
    type B = B;

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
        panels: Panels<f32, B>,
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
unsafe fn kernel_6x16<B: FloatValue>(
    panels: Panels<f32, B>,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    accumulate: bool,
    epilogue: Option<&TileEpilogue>,
) {
    record(B::FAMILY, Isa::Avx2Fma);
    tile::kernel::<simd::Avx2, B, MR, NV, 8>(panels, c, ldc, rows, accumulate, epilogue)
}

/// int8 weights and 8-bit activations on AVX2, both widened to 16 bits and multiplied by
/// `vpmaddwd` (see `simd::Avx2`'s `I8Dot`): a 6×16 tile of `i32` sums.
pub(crate) struct Avx2Int8;

impl GemmKernel for Avx2Int8 {
    type A = u8;
    type B = i8;
    const GROUP: usize = 2;
    const MR: usize = MR;
    const NR: usize = NR;
    /// The f32 kernel's 16 KiB B panel holds 1024 depths of int8.
    const KC: usize = 1024;
    const MC: usize = 198;
    const NC: usize = 4096;

    unsafe fn kernel(
        panels: Panels<u8, i8>,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        accumulate: bool,
        epilogue: Option<&TileEpilogue>,
    ) {
        // SAFETY: the caller guarantees AVX2 and the operands.
        unsafe { kernel_6x16_int8(panels, c, ldc, rows, accumulate, epilogue) }
    }
}

/// # Safety
/// As `GemmKernel::kernel`.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_6x16_int8(
    panels: Panels<u8, i8>,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    accumulate: bool,
    epilogue: Option<&TileEpilogue>,
) {
    record(Kernel::GemmInt8, Isa::Avx2Fma);
    tile::prefetch_tile::<simd::Avx2>(c, ldc, rows, NR, epilogue);
    let sums = tile::multiply_int8::<simd::Avx2, MR, NV>(panels);
    tile::finish(sums, c, ldc, rows, accumulate, epilogue);
}
