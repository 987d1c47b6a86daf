//! The NEON micro-kernel: an 8×8 tile in sixteen 4-lane accumulators, summed by the
//! shared [`tile::multiply`] on [`simd::Neon`](crate::simd::Neon) and finished by the
//! portable kernel's `store_tile` with the reference activations.

use std::marker::PhantomData;

use super::portable::store_tile;
use super::{tile, FloatValue, GemmKernel, Panels, TileEpilogue};
use crate::dispatch::record;
use crate::simd::{self, F32s};
use crate::Isa;

/// The f32 kernel, on weights of `B` (f32, or bf16 widened).
pub(crate) struct Neon<B = f32>(PhantomData<B>);

const MR: usize = 8;
/// Columns of the tile, in vectors of 4.
const NV: usize = 2;
const NR: usize = 4 * NV;

impl<B: FloatValue> GemmKernel for Neon<B> {
    type A = f32;
    type B = B;

    /// 8×8: 16 of the 32 vector registers accumulate, 4 hold the operands of a step.
    const MR: usize = MR;
    const NR: usize = NR;
    /// A 256×8 B panel is 8 KiB, well inside any ARM core's L1d.
    const KC: usize = 256;
    /// A 128×256 A block is 128 KiB, within a typical 512 KiB–1 MiB L2.
    const MC: usize = 128;
    const NC: usize = 4096;

    unsafe fn kernel(
        panels: Panels<f32, B>,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        accumulate: bool,
        epilogue: Option<&TileEpilogue>,
    ) {
        // SAFETY: the caller guarantees NEON and the operands, as kernel_8x8 needs.
        unsafe { kernel_8x8(panels, c, ldc, rows, accumulate, epilogue) }
    }
}

/// # Safety
/// As `GemmKernel::kernel`.
#[target_feature(enable = "neon")]
unsafe fn kernel_8x8<B: FloatValue>(
    panels: Panels<f32, B>,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    accumulate: bool,
    epilogue: Option<&TileEpilogue>,
) {
    record(B::FAMILY, Isa::Neon);
    let acc = tile::multiply::<simd::Neon, B, MR, NV, 4>(panels);
    let mut tile = [0.0f32; MR * NR];
    for (r, acc_row) in acc.iter().enumerate() {
        for (v, sum) in acc_row.iter().enumerate() {
            // SAFETY: row r of `tile` has NR = NV·4 values.
            unsafe { sum.store(tile.as_mut_ptr().add(r * NR + v * 4)) };
        }
    }
    // SAFETY: the caller's guarantees on `c` and the epilogue are store_tile's.
    unsafe { store_tile(&tile[..rows * NR], NR, c, ldc, accumulate, epilogue) };
}
