//! [`F32s`] on NEON: four lanes in a `float32x4_t`, tails through a stack buffer.

use std::arch::aarch64::*;

use super::F32s;
use crate::expf::{exp2_fraction, EXP2_MIN_ARG};

/// Four `f32` lanes for NEON.
#[derive(Clone, Copy)]
pub(crate) struct Neon(float32x4_t);

impl F32s for Neon {
    const LANES: usize = 4;

    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Self(vdupq_n_f32(x))
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        Self(vdupq_n_f32(0.0))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Self(vld1q_f32(p))
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> Self {
        Self(vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p))))
    }
    #[inline(always)]
    unsafe fn load_tail(p: *const f32, n: usize) -> Self {
        Self::load_tail_or(p, n, Self::zero())
    }
    #[inline(always)]
    unsafe fn load_tail_or(p: *const f32, n: usize, fill: Self) -> Self {
        let mut lanes = [0.0f32; 4];
        vst1q_f32(lanes.as_mut_ptr(), fill.0);
        std::ptr::copy_nonoverlapping(p, lanes.as_mut_ptr(), n.min(4));
        Self(vld1q_f32(lanes.as_ptr()))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        vst1q_f32(p, self.0)
    }
    #[inline(always)]
    unsafe fn store_tail(self, p: *mut f32, n: usize) {
        let mut lanes = [0.0f32; 4];
        vst1q_f32(lanes.as_mut_ptr(), self.0);
        std::ptr::copy_nonoverlapping(lanes.as_ptr(), p, n.min(4));
    }
    #[inline(always)]
    unsafe fn keep_first(self, n: usize) -> Self {
        let index = vld1q_u32([0u32, 1, 2, 3].as_ptr());
        let keep = vcltq_u32(index, vdupq_n_u32(n.min(4) as u32));
        Self(vreinterpretq_f32_u32(vandq_u32(
            vreinterpretq_u32_f32(self.0),
            keep,
        )))
    }

    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        Self(vaddq_f32(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        Self(vsubq_f32(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        Self(vmulq_f32(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn fma(self, b: Self, c: Self) -> Self {
        Self(vfmaq_f32(c.0, self.0, b.0))
    }
    /// NaN if either lane is NaN.
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        Self(vmaxq_f32(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        Self(vrndnq_f32(self.0))
    }

    #[inline(always)]
    unsafe fn reduce_sum(self) -> f32 {
        vaddvq_f32(self.0)
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        vmaxvq_f32(self.0)
    }

    /// `t` clamped to the minimum first, where `n = −127` makes the exponent bits of
    /// `2^n` 0; NEON's max gives NaN for NaN.
    #[inline(always)]
    unsafe fn exp2_nonpositive(t: Self) -> Self {
        let t = Self::splat(EXP2_MIN_ARG).max(t);
        let n = t.round();
        let pow2 = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(
            vcvtq_s32_f32(n.0),
            vdupq_n_s32(127),
        )));
        exp2_fraction(t.sub(n)).mul(Self(pow2))
    }

    /// A no-op: stable Rust has no NEON prefetch intrinsic, and the attention tiles, the
    /// only ones that ask for L1, have not been measured with an `asm!` one.
    #[inline(always)]
    fn prefetch_l1(_: *const f32) {}
    #[inline(always)]
    fn prefetch_l2(p: *const f32) {
        // SAFETY: a prefetch into L2 changes nothing the program sees and never faults.
        unsafe {
            std::arch::asm!(
                "prfm pldl2keep, [{0}]",
                in(reg) p,
                options(readonly, nostack, preserves_flags)
            )
        };
    }
}
