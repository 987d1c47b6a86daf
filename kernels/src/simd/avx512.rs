//! [`F32s`] on AVX-512F: sixteen lanes in a `__m512`, tails by mask registers.

use std::arch::x86_64::*;

use super::{Bf16Dot, F32s, I8Dot, Transcendental};
use crate::expf::{exp2_fraction, EXP2_MIN_ARG};

/// Sixteen `f32` lanes for AVX-512F (with the AVX2 and FMA beneath it).
#[derive(Clone, Copy)]
pub(crate) struct Avx512(__m512);

/// Lanes `0..n.min(16)` set.
#[inline(always)]
fn tail_mask(n: usize) -> __mmask16 {
    if n >= 16 {
        !0
    } else {
        (1 << n) - 1
    }
}

impl F32s for Avx512 {
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Self(_mm512_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        Self(_mm512_setzero_ps())
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Self(_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> Self {
        let widened = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()));
        Self(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(widened)))
    }
    #[inline(always)]
    unsafe fn load_tail(p: *const f32, n: usize) -> Self {
        Self(_mm512_maskz_loadu_ps(tail_mask(n), p))
    }
    #[inline(always)]
    unsafe fn load_tail_or(p: *const f32, n: usize, fill: Self) -> Self {
        Self(_mm512_mask_loadu_ps(fill.0, tail_mask(n), p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn store_tail(self, p: *mut f32, n: usize) {
        _mm512_mask_storeu_ps(p, tail_mask(n), self.0)
    }
    #[inline(always)]
    unsafe fn keep_first(self, n: usize) -> Self {
        Self(_mm512_maskz_mov_ps(tail_mask(n), self.0))
    }

    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        Self(_mm512_add_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        Self(_mm512_sub_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        Self(_mm512_mul_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn fma(self, b: Self, c: Self) -> Self {
        Self(_mm512_fmadd_ps(self.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        Self(_mm512_max_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        Self(_mm512_roundscale_ps::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(self.0))
    }

    #[inline(always)]
    unsafe fn reduce_sum(self) -> f32 {
        _mm512_reduce_add_ps(self.0)
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        _mm512_reduce_max_ps(self.0)
    }

    /// Lanes below the minimum (−∞ too, whose fraction would be NaN) are masked to 0;
    /// NaN compares unordered, stays in, and passes through. `2^n` is applied by
    /// `scalef`, rounded once, so the bottom of the range gives subnormals.
    #[inline(always)]
    unsafe fn exp2_nonpositive(t: Self) -> Self {
        let keep = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(t.0, _mm512_set1_ps(EXP2_MIN_ARG));
        let n = t.round();
        Self(_mm512_maskz_scalef_ps(keep, exp2_fraction(t.sub(n)).0, n.0))
    }

    #[inline(always)]
    fn prefetch_l1(p: *const f32) {
        // SAFETY: a prefetch never faults and changes nothing the program sees.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[inline(always)]
    fn prefetch_l2(p: *const f32) {
        // SAFETY: as in `prefetch_l1`.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast()) }
    }
}

impl Transcendental for Avx512 {
    type Mask = __mmask16;
    type I32s = __m512i;

    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        Self(_mm512_div_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn fnma(self, b: Self, c: Self) -> Self {
        Self(_mm512_fnmadd_ps(self.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn min(self, o: Self) -> Self {
        Self(_mm512_min_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        Self(_mm512_abs_ps(self.0))
    }
    #[inline(always)]
    unsafe fn lt(self, o: Self) -> __mmask16 {
        _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, o.0)
    }
    #[inline(always)]
    unsafe fn gt(self, o: Self) -> __mmask16 {
        _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, o.0)
    }
    #[inline(always)]
    unsafe fn select(mask: __mmask16, if_true: Self, if_false: Self) -> Self {
        Self(_mm512_mask_blend_ps(mask, if_false.0, if_true.0))
    }

    #[inline(always)]
    unsafe fn to_i32(self) -> __m512i {
        _mm512_cvtps_epi32(self.0)
    }
    #[inline(always)]
    unsafe fn from_i32(n: __m512i) -> Self {
        Self(_mm512_cvtepi32_ps(n))
    }
    #[inline(always)]
    unsafe fn pow2(n: __m512i) -> Self {
        Self(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(
            _mm512_add_epi32(n, _mm512_set1_epi32(127)),
        )))
    }
    #[inline(always)]
    unsafe fn ldexp(self, n: Self) -> Self {
        Self(_mm512_scalef_ps(self.0, n.0))
    }
    #[inline(always)]
    unsafe fn lookup8(table: &[f32; 8], n: __m512i) -> Self {
        let row = _mm512_zextps256_ps512(_mm256_loadu_ps(table.as_ptr()));
        Self(_mm512_permutexvar_ps(n, row))
    }
}

/// `vdpbf16ps`: needs AVX512_BF16 as well.
impl Bf16Dot for Avx512 {
    type Pairs = __m512bh;

    #[inline(always)]
    unsafe fn splat_pair(p: *const u16) -> __m512bh {
        std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
            p.cast::<i32>().read_unaligned(),
        ))
    }
    #[inline(always)]
    unsafe fn load_pairs(p: *const u16) -> __m512bh {
        std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.cast()))
    }
    #[inline(always)]
    unsafe fn dot_pairs(self, a: __m512bh, b: __m512bh) -> Self {
        Self(_mm512_dpbf16_ps(self.0, a, b))
    }
}

/// `vpdpbusd`: needs AVX512_VNNI as well. Four `u8·i8` products per lane summed into
/// `i32` with no intermediate rounding or saturation.
impl I8Dot for Avx512 {
    type Ints = __m512i;
    const GROUP: usize = 4;

    #[inline(always)]
    unsafe fn zero_ints() -> __m512i {
        _mm512_setzero_si512()
    }
    #[inline(always)]
    unsafe fn splat_group(p: *const u8) -> __m512i {
        _mm512_set1_epi32(p.cast::<i32>().read_unaligned())
    }
    #[inline(always)]
    unsafe fn load_groups(p: *const i8) -> __m512i {
        _mm512_loadu_si512(p.cast())
    }
    #[inline(always)]
    unsafe fn dot_groups(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        _mm512_dpbusd_epi32(acc, a, b)
    }
    #[inline(always)]
    unsafe fn sub_scaled(acc: __m512i, zero: i32, sums: *const i32) -> __m512i {
        let sums = _mm512_loadu_si512(sums.cast());
        _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(zero), sums))
    }
    #[inline(always)]
    unsafe fn ints_to_f32(n: __m512i) -> Self {
        Self(_mm512_cvtepi32_ps(n))
    }
}
