//! The portable micro-kernel: plain Rust that the compiler vectorises for whatever the
//! target's baseline is (SSE2 on x86-64). It backs `Isa::Scalar`.

use std::marker::PhantomData;

use super::{FloatValue, GemmKernel, Panels, TileEpilogue};
use crate::dispatch::{record, Kernel};
use crate::Isa;

/// The f32 kernel, on weights of `B` (f32, or bf16 widened).
pub(crate) struct Portable<B = f32>(PhantomData<B>);

const MR: usize = 4;
const NR: usize = 8;

impl<B: FloatValue> GemmKernel for Portable<B> {
    type A = f32;
    type B = B;

    /// 4×8: 32 accumulators, eight SSE registers, leaving room for the operands.
    const MR: usize = MR;
    const NR: usize = NR;
    /// A 256×8 B panel is 8 KiB, a quarter of L1d.
    const KC: usize = 256;
    /// A 128×256 A block is 128 KiB, a quarter of L2.
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
        record(B::FAMILY, Isa::Scalar);
        let Panels {
            depth,
            a,
            a_stride,
            b,
            ..
        } = panels;
        // SAFETY: the caller guarantees MR rows of depth values, a_stride apart, at `a`
        // and NR·depth values at `b`.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(a, (MR - 1) * a_stride + depth),
                std::slice::from_raw_parts(b, NR * depth),
            )
        };
        let mut acc = [[0.0f32; NR]; MR];
        for (p, b_step) in b.chunks_exact(NR).enumerate() {
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let a_value = a[r * a_stride + p];
                for (acc_value, &b_value) in acc_row.iter_mut().zip(b_step) {
                    *acc_value += a_value * b_value.to_f32();
                }
            }
        }
        // SAFETY: the caller's guarantees on `c` and the epilogue are store_tile's.
        unsafe {
            store_tile(
                &acc.as_flattened()[..rows * NR],
                NR,
                c,
                ldc,
                accumulate,
                epilogue,
            )
        };
    }
}

/// int8 weights and 8-bit activations in plain Rust: a 4×8 tile of `i32` sums,
/// dequantized as the SIMD kernels do.
pub(crate) struct PortableInt8;

impl GemmKernel for PortableInt8 {
    type A = u8;
    type B = i8;
    const MR: usize = MR;
    const NR: usize = NR;
    /// A 1024×8 B panel is 8 KiB, as the f32 kernel's.
    const KC: usize = 1024;
    const MC: usize = 128;
    const NC: usize = 4096;

    unsafe fn kernel(
        panels: Panels<u8, i8>,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        accumulate: bool,
        epilogue: Option<&TileEpilogue>,
    ) {
        record(Kernel::GemmInt8, Isa::Scalar);
        let Panels {
            depth,
            a,
            a_stride,
            b,
            dequant,
            ..
        } = panels;
        // SAFETY: the caller guarantees MR rows of depth values, a_stride apart, at `a`,
        // NR·depth values at `b`, and MR row and NR column entries of `dequant`.
        let (a, b, a_rows, b_scales, b_sums) = unsafe {
            (
                std::slice::from_raw_parts(a, (MR - 1) * a_stride + depth),
                std::slice::from_raw_parts(b, NR * depth),
                std::slice::from_raw_parts(dequant.a, MR),
                std::slice::from_raw_parts(dequant.b_scale, NR),
                std::slice::from_raw_parts(dequant.b_sum, NR),
            )
        };
        let mut sums = [[0i32; NR]; MR];
        for (p, b_step) in b.chunks_exact(NR).enumerate() {
            for (r, sum_row) in sums.iter_mut().enumerate() {
                let a_value = i32::from(a[r * a_stride + p]);
                for (sum, &b_value) in sum_row.iter_mut().zip(b_step) {
                    *sum += a_value * i32::from(b_value);
                }
            }
        }
        let mut tile = [0.0f32; MR * NR];
        for ((tile_row, sum_row), row) in tile.chunks_exact_mut(NR).zip(&sums).zip(a_rows) {
            for (j, (value, &sum)) in tile_row.iter_mut().zip(sum_row).enumerate() {
                let exact = sum - row.zero * b_sums[j];
                *value = exact as f32 * (row.scale * b_scales[j]);
            }
        }
        // SAFETY: the caller's guarantees on `c` and the epilogue are store_tile's.
        unsafe { store_tile(&tile[..rows * NR], NR, c, ldc, accumulate, epilogue) };
    }
}

/// Stores a finished tile (`tile`, row-major, `nr` columns) at `c` one value at a time:
/// adds C's partial sums when `accumulate`, then applies the epilogue with the reference
/// activations.
///
/// # Safety
/// As `GemmKernel::kernel` for `c` and the epilogue, with `tile.len() / nr` rows.
pub(super) unsafe fn store_tile(
    tile: &[f32],
    nr: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    epilogue: Option<&TileEpilogue>,
) {
    for (r, row) in tile.chunks_exact(nr).enumerate() {
        for (j, &sum) in row.iter().enumerate() {
            let at = r * ldc + j;
            // SAFETY: (r, j) lies in the tile the caller vouches for.
            unsafe {
                let mut v = if accumulate { *c.add(at) + sum } else { sum };
                if let Some(e) = epilogue {
                    if let Some(bias) = e.bias {
                        v += *bias.add(j);
                    }
                    v = e.activation.apply(v);
                    if let Some(residual) = e.residual {
                        v += *residual.add(at);
                    }
                }
                *c.add(at) = v;
            }
        }
    }
}
