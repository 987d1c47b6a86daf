//! The AVX-512 micro-kernels, 6×64 tiles in 24 zmm accumulators on
//! [`simd::Avx512`](crate::simd::Avx512): the shared [`tile::kernel`] on f32 weights (or
//! bf16 ones widened as they load), and the bf16 (`vdpbf16ps`) and int8 (`vpdpbusd`)
//! dot-product kernels.

use std::marker::PhantomData;

use super::{tile, FloatValue, GemmKernel, Panels, TileEpilogue};
use crate::dispatch::{record, Kernel};
use crate::simd;
use crate::Isa;

/// The f32 kernel, on weights of `B` (f32, or bf16 widened).
pub(crate) struct Avx512<B = f32>(PhantomData<B>);

/// Rows of the tile.
const MR: usize = 6;
/// Columns of the tile, in zmm vectors of 16.
const NV: usize = 4;
const NR: usize = 16 * NV;

impl<B: FloatValue> GemmKernel for Avx512<B> {
    type A = f32;
    type B = B;

    /// 6×64: 24 of the 32 zmm registers accumulate, four hold a step of B, and A's values
    /// are broadcast straight from memory into the FMAs. Each step issues 24 FMAs (12
    /// cycles on the two FMA ports) against 4 + 6 loads, and 24 independent accumulators
    /// cover the 4-cycle FMA latency three times over. The K loop is unrolled by 4. Measured against 12×32, 14×32, 8×32,
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
        panels: Panels<f32, B>,
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
unsafe fn kernel_6x64<B: FloatValue>(
    panels: Panels<f32, B>,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    accumulate: bool,
    epilogue: Option<&TileEpilogue>,
) {
    record(B::FAMILY, Isa::Avx512);
    tile::kernel::<simd::Avx512, B, MR, NV, 4>(panels, c, ldc, rows, accumulate, epilogue)
}

/// bf16 weights and activations multiplied by `vdpbf16ps` (AVX512_BF16): a 6×64 tile as
/// the f32 kernel's, each instruction taking two depths, so twice the f32 kernel's
/// multiply-adds per instruction.
pub(crate) struct Avx512Bf16;

impl GemmKernel for Avx512Bf16 {
    type A = u16;
    type B = u16;
    const GROUP: usize = 2;
    const MR: usize = MR;
    const NR: usize = NR;
    /// The f32 kernel's 768-deep block in half the bytes: a 96 KiB B panel stays in L2
    /// beside the task's 9 KiB A panels (`Avx512::KC` says why deep blocks pay).
    const KC: usize = 768;
    const MC: usize = 198;
    const NC: usize = 4096;

    unsafe fn kernel(
        panels: Panels<u16, u16>,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        accumulate: bool,
        epilogue: Option<&TileEpilogue>,
    ) {
        // SAFETY: the caller guarantees AVX512_BF16 and the operands.
        unsafe { kernel_6x64_bf16(panels, c, ldc, rows, accumulate, epilogue) }
    }
}

/// # Safety
/// As `GemmKernel::kernel`.
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
unsafe fn kernel_6x64_bf16(
    panels: Panels<u16, u16>,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    accumulate: bool,
    epilogue: Option<&TileEpilogue>,
) {
    record(Kernel::GemmBf16, Isa::Avx512);
    tile::prefetch_tile::<simd::Avx512>(c, ldc, rows, NR, epilogue);
    let sums = tile::multiply_bf16::<simd::Avx512, MR, NV>(panels);
    tile::finish(sums, c, ldc, rows, accumulate, epilogue);
}

/// int8 weights and 8-bit activations multiplied by `vpdpbusd` (AVX512_VNNI): a 6×64
/// tile of `i32` sums, each instruction taking four depths.
pub(crate) struct Avx512Vnni;

impl GemmKernel for Avx512Vnni {
    type A = u8;
    type B = i8;
    const GROUP: usize = 4;
    const MR: usize = MR;
    const NR: usize = NR;
    /// The f32 kernel's 192 KiB B panel holds 3072 depths of int8: one block covers ViT's
    /// widest K, so C is written once, dequantized, never read back.
    const KC: usize = 3072;
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
        // SAFETY: the caller guarantees AVX512_VNNI and the operands.
        unsafe { kernel_6x64_int8(panels, c, ldc, rows, accumulate, epilogue) }
    }
}

/// # Safety
/// As `GemmKernel::kernel`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
unsafe fn kernel_6x64_int8(
    panels: Panels<u8, i8>,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    accumulate: bool,
    epilogue: Option<&TileEpilogue>,
) {
    record(Kernel::GemmInt8, Isa::Avx512);
    tile::prefetch_tile::<simd::Avx512>(c, ldc, rows, NR, epilogue);
    let sums = tile::multiply_int8::<simd::Avx512, MR, NV>(panels);
    tile::finish(sums, c, ldc, rows, accumulate, epilogue);
}
