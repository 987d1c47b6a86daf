//! The NEON micro-kernel: an 8×8 tile in sixteen 4-lane accumulators.

use std::arch::aarch64::*;

use super::portable::store_tile;
use super::{GemmKernel, Panels, TileEpilogue};

pub(crate) struct Neon;

const MR: usize = 8;
const NR: usize = 8;

impl GemmKernel for Neon {
    /// 8×8: 16 of the 32 vector registers accumulate, 4 hold the operands of a step.
    const MR: usize = MR;
    const NR: usize = NR;
    /// A 256×8 B panel is 8 KiB, well inside any ARM core's L1d.
    const KC: usize = 256;
    /// A 128×256 A block is 128 KiB, within a typical 512 KiB–1 MiB L2.
    const MC: usize = 128;
    const NC: usize = 4096;

    unsafe fn kernel(
        panels: Panels,
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
unsafe fn kernel_8x8(
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
    let mut acc = [[vdupq_n_f32(0.0); 2]; MR];
    for p in 0..depth {
        if p % 4 == 0 && !prefetch.is_null() {
            // One line of what a later call reads, per four steps: `depth·16` bytes in all.
            // SAFETY: a prefetch into L2 changes nothing the program sees and never faults.
            unsafe {
                std::arch::asm!(
                    "prfm pldl2keep, [{0}]",
                    in(reg) prefetch.wrapping_add(p * 4),
                    options(readonly, nostack, preserves_flags)
                )
            };
        }
        // SAFETY: step p of each panel lies within the A rows and NR·depth values the
        // caller guarantees.
        unsafe {
            let b_lo = vld1q_f32(b.add(p * NR));
            let b_hi = vld1q_f32(b.add(p * NR + 4));
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let a_value = *a.add(r * a_stride + p);
                acc_row[0] = vfmaq_n_f32(acc_row[0], b_lo, a_value);
                acc_row[1] = vfmaq_n_f32(acc_row[1], b_hi, a_value);
            }
        }
    }
    let mut tile = [0.0f32; MR * NR];
    for (r, acc_row) in acc.iter().enumerate() {
        // SAFETY: row r of `tile` has NR = 8 values.
        unsafe {
            vst1q_f32(tile.as_mut_ptr().add(r * NR), acc_row[0]);
            vst1q_f32(tile.as_mut_ptr().add(r * NR + 4), acc_row[1]);
        }
    }
    // SAFETY: the caller's guarantees on `c` and the epilogue are store_tile's.
    unsafe { store_tile(&tile[..rows * NR], NR, c, ldc, accumulate, epilogue) };
}
