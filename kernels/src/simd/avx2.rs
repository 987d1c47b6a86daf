//! [`F32s`] on AVX2 and FMA: eight lanes in a `__m256`.

use std::arch::x86_64::*;

use super::{F32s, I8Dot, Transcendental};
use crate::expf::{exp2_fraction, EXP2_MIN_ARG};

/// Eight `f32` lanes for AVX2 and FMA.
#[derive(Clone, Copy)]
pub(crate) struct Avx2(__m256);

/// Lanes `0..n.min(8)` set, for masked loads and stores.
#[inline(always)]
unsafe fn tail_mask(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n.min(8) as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

impl F32s for Avx2 {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Self(_mm256_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        Self(_mm256_setzero_ps())
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Self(_mm256_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> Self {
        let widened = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
        Self(_mm256_castsi256_ps(_mm256_slli_epi32::<16>(widened)))
    }
    #[inline(always)]
    unsafe fn load_tail(p: *const f32, n: usize) -> Self {
        Self(_mm256_maskload_ps(p, tail_mask(n)))
    }
    #[inline(always)]
    unsafe fn load_tail_or(p: *const f32, n: usize, fill: Self) -> Self {
        let mask = tail_mask(n);
        let loaded = _mm256_maskload_ps(p, mask);
        Self(_mm256_blendv_ps(fill.0, loaded, _mm256_castsi256_ps(mask)))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn store_tail(self, p: *mut f32, n: usize) {
        _mm256_maskstore_ps(p, tail_mask(n), self.0)
    }
    #[inline(always)]
    unsafe fn keep_first(self, n: usize) -> Self {
        Self(_mm256_and_ps(self.0, _mm256_castsi256_ps(tail_mask(n))))
    }

    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        Self(_mm256_add_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        Self(_mm256_sub_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        Self(_mm256_mul_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn fma(self, b: Self, c: Self) -> Self {
        Self(_mm256_fmadd_ps(self.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        Self(_mm256_max_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        Self(_mm256_round_ps::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(self.0))
    }

    #[inline(always)]
    unsafe fn reduce_sum(self) -> f32 {
        let v = self.0;
        let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
        _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        let v = self.0;
        let half = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let pair = _mm_max_ps(half, _mm_movehl_ps(half, half));
        _mm_cvtss_f32(_mm_max_ss(pair, _mm_movehdup_ps(pair)))
    }

    /// `t` clamped to the minimum first, where `n = −127` makes [`Transcendental::pow2`]'s
    /// exponent bits 0; max returns its second operand for NaN, so NaN passes through.
    #[inline(always)]
    unsafe fn exp2_nonpositive(t: Self) -> Self {
        let t = Self::splat(EXP2_MIN_ARG).max(t);
        let n = t.round();
        exp2_fraction(t.sub(n)).mul(Self::pow2(n.to_i32()))
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

impl Transcendental for Avx2 {
    type Mask = __m256;
    type I32s = __m256i;

    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        Self(_mm256_div_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn fnma(self, b: Self, c: Self) -> Self {
        Self(_mm256_fnmadd_ps(self.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn min(self, o: Self) -> Self {
        Self(_mm256_min_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        Self(_mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0))
    }
    #[inline(always)]
    unsafe fn lt(self, o: Self) -> __m256 {
        _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, o.0)
    }
    #[inline(always)]
    unsafe fn gt(self, o: Self) -> __m256 {
        _mm256_cmp_ps::<_CMP_GT_OQ>(self.0, o.0)
    }
    #[inline(always)]
    unsafe fn select(mask: __m256, if_true: Self, if_false: Self) -> Self {
        Self(_mm256_blendv_ps(if_false.0, if_true.0, mask))
    }

    #[inline(always)]
    unsafe fn to_i32(self) -> __m256i {
        _mm256_cvtps_epi32(self.0)
    }
    #[inline(always)]
    unsafe fn from_i32(n: __m256i) -> Self {
        Self(_mm256_cvtepi32_ps(n))
    }
    /// Also 0 for `n = −127`.
    #[inline(always)]
    unsafe fn pow2(n: __m256i) -> Self {
        Self(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(
            _mm256_add_epi32(n, _mm256_set1_epi32(127)),
        )))
    }
    /// In two normal factors, `2^⌊n/2⌋` and the rest, as `n` may pass the exponent range
    /// at both ends; the first product is exact.
    #[inline(always)]
    unsafe fn ldexp(self, n: Self) -> Self {
        let n = n.to_i32();
        let low = _mm256_srai_epi32::<1>(n);
        let high = _mm256_sub_epi32(n, low);
        self.mul(Self::pow2(low)).mul(Self::pow2(high))
    }
    #[inline(always)]
    unsafe fn lookup8(table: &[f32; 8], n: __m256i) -> Self {
        Self(_mm256_permutevar8x32_ps(_mm256_loadu_ps(table.as_ptr()), n))
    }
}

/// AVX2 has no 8-bit dot product that cannot saturate (`vpmaddubsw` saturates its 16-bit
/// pair sums at 2·255·127), so both operands are widened to 16 bits and multiplied by
/// `vpmaddwd`, whose pair sums fit `i32` exactly: two products per lane per step.
impl I8Dot for Avx2 {
    type Ints = __m256i;
    const GROUP: usize = 2;

    #[inline(always)]
    unsafe fn zero_ints() -> __m256i {
        _mm256_setzero_si256()
    }
    #[inline(always)]
    unsafe fn splat_group(p: *const u8) -> __m256i {
        // Two u8 values zero-extended into the two i16 halves of every lane.
        let pair = u32::from(*p) | (u32::from(*p.add(1)) << 16);
        _mm256_set1_epi32(pair as i32)
    }
    #[inline(always)]
    unsafe fn load_groups(p: *const i8) -> __m256i {
        _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast()))
    }
    #[inline(always)]
    unsafe fn dot_groups(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
    }
    #[inline(always)]
    unsafe fn sub_scaled(acc: __m256i, zero: i32, sums: *const i32) -> __m256i {
        let sums = _mm256_loadu_si256(sums.cast());
        _mm256_sub_epi32(acc, _mm256_mullo_epi32(_mm256_set1_epi32(zero), sums))
    }
    #[inline(always)]
    unsafe fn ints_to_f32(n: __m256i) -> Self {
        Self(_mm256_cvtepi32_ps(n))
    }
}
