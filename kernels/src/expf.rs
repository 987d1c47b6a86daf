//! Cephes' `expf`, which the vectorised `exp` of each instruction set evaluates:
//! `e^x = 2^n · e^r` with `n = round(x·log2 e)` and `r = x − n·ln 2 ∈ [−ln2/2, ln2/2]`.
//! Within 2 ulp; gradual underflow to 0 and overflow to +∞ as in `f32::exp`.
//!
//! One vectorised `exp` per instruction set lives here, for every kernel that needs one
//! (attention's softmax, the activations).

/// ln 2 split so that `n·LN2_HI` is exact for the `n` that occur (Cody–Waite).
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// `e^x` rounds to 0 below this; arguments are clamped to it so that `n` stays in range.
pub(crate) const MIN_ARG: f32 = -104.0;
/// `e^x` overflows above this; arguments are clamped to it likewise.
pub(crate) const MAX_ARG: f32 = 89.0;
/// `e^r ≈ 1 + r + r²·P(r)`; the coefficients of `P`, highest degree first.
pub(crate) const POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// Checks a vectorised `exp`, applied to 8 lanes at a time, against `f64::exp` over its
/// range and at special values.
#[cfg(test)]
pub(crate) fn check(exp: impl Fn([f32; 8]) -> [f32; 8]) {
    let mut worst = 0.0f64;
    let mut x = -87.0f32;
    while x < 88.7 {
        let lanes: [f32; 8] = std::array::from_fn(|i| x + i as f32 * 1.37e-3);
        for (a, x) in exp(lanes).iter().zip(lanes) {
            let exact = (x as f64).exp();
            worst = worst.max(((*a as f64 - exact) / exact).abs());
        }
        x += 0.0117;
    }
    assert!(worst < 2.5e-7, "worst relative error {worst}");
    let special = [
        f32::NEG_INFINITY,
        -1000.0,
        1000.0,
        f32::INFINITY,
        f32::NAN,
        0.0,
        -0.0,
        -100.0,
    ];
    let out = exp(special);
    assert_eq!(&out[..4], &[0.0, 0.0, f32::INFINITY, f32::INFINITY]);
    assert!(out[4].is_nan() && out[5] == 1.0 && out[6] == 1.0);
    assert_eq!(out[7], (-100.0f32).exp(), "subnormal results");
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    /// `e^x` on 8 lanes by [`expf`]; NaN stays NaN.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn exp(x: __m256) -> __m256 {
        // max/min return their second operand for NaN, so NaN passes through.
        let x = _mm256_min_ps(
            _mm256_set1_ps(super::MAX_ARG),
            _mm256_max_ps(_mm256_set1_ps(super::MIN_ARG), x),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(super::LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(super::LN2_LO), r);
        let mut p = _mm256_set1_ps(super::POLY[0]);
        for c in &super::POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let y = _mm256_add_ps(
            _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r),
            _mm256_set1_ps(1.0),
        );
        // 2^n in two normal factors, as n ∈ [−150, 128] is past the exponent range at both ends.
        let n = _mm256_cvtps_epi32(n);
        let low = _mm256_srai_epi32::<1>(n);
        let high = _mm256_sub_epi32(n, low);
        _mm256_mul_ps(_mm256_mul_ps(y, power_of_two(low)), power_of_two(high))
    }

    /// `2^k` for integer lanes `k ∈ [−126, 127]`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn power_of_two(k: __m256i) -> __m256 {
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            k,
            _mm256_set1_epi32(127),
        )))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn exp_is_accurate_over_its_range() {
            if crate::Isa::Avx2Fma.is_supported() {
                crate::expf::check(|lanes| {
                    let mut out = [0.0f32; 8];
                    // SAFETY: AVX2 and FMA were detected; both arrays have 8 lanes.
                    unsafe {
                        _mm256_storeu_ps(out.as_mut_ptr(), exp(_mm256_loadu_ps(lanes.as_ptr())))
                    };
                    out
                });
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// `e^x` on 16 lanes by [`expf`]; NaN stays NaN.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn exp(x: __m512) -> __m512 {
        // max/min return their second operand for NaN, so NaN passes through.
        let x = _mm512_min_ps(
            _mm512_set1_ps(super::MAX_ARG),
            _mm512_max_ps(_mm512_set1_ps(super::MIN_ARG), x),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(super::LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(super::LN2_LO), r);
        let mut p = _mm512_set1_ps(super::POLY[0]);
        for c in &super::POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        let y = _mm512_add_ps(
            _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r),
            _mm512_set1_ps(1.0),
        );
        // y·2^n rounded once, to a subnormal or to 0 below the exponent range and to +∞
        // above it.
        _mm512_scalef_ps(y, n)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn exp_is_accurate_over_its_range() {
            if crate::Isa::Avx512.is_supported() {
                crate::expf::check(|lanes| {
                    let mut out = [0.0f32; 16];
                    let mut both = [0.0f32; 16];
                    both[..8].copy_from_slice(&lanes);
                    both[8..].copy_from_slice(&lanes);
                    // SAFETY: AVX-512F was detected; both arrays have 16 lanes.
                    unsafe {
                        _mm512_storeu_ps(out.as_mut_ptr(), exp(_mm512_loadu_ps(both.as_ptr())))
                    };
                    let (low, high) = out.split_at(8);
                    assert!(low
                        .iter()
                        .zip(high)
                        .all(|(a, b)| a.to_bits() == b.to_bits()));
                    out[..8].try_into().unwrap()
                });
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use std::arch::aarch64::*;

    /// `e^x` on 4 lanes by [`expf`]; NaN stays NaN.
    #[inline]
    #[target_feature(enable = "neon")]
    pub(crate) unsafe fn exp(x: float32x4_t) -> float32x4_t {
        // NEON's max/min return NaN if either operand is NaN.
        let x = vminq_f32(
            vdupq_n_f32(super::MAX_ARG),
            vmaxq_f32(vdupq_n_f32(super::MIN_ARG), x),
        );
        let n = vrndnq_f32(vmulq_n_f32(x, std::f32::consts::LOG2_E));
        let r = vfmsq_f32(x, n, vdupq_n_f32(super::LN2_HI));
        let r = vfmsq_f32(r, n, vdupq_n_f32(super::LN2_LO));
        let mut p = vdupq_n_f32(super::POLY[0]);
        for c in &super::POLY[1..] {
            p = vfmaq_f32(vdupq_n_f32(*c), p, r);
        }
        let y = vaddq_f32(vfmaq_f32(r, vmulq_f32(p, r), r), vdupq_n_f32(1.0));
        // 2^n in two normal factors, as n ∈ [−150, 128] is past the exponent range at both ends.
        let n = vcvtq_s32_f32(n);
        let low = vshrq_n_s32::<1>(n);
        let high = vsubq_s32(n, low);
        vmulq_f32(vmulq_f32(y, power_of_two(low)), power_of_two(high))
    }

    /// `2^k` for integer lanes `k ∈ [−126, 127]`.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn power_of_two(k: int32x4_t) -> float32x4_t {
        vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(k, vdupq_n_s32(127))))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn exp_is_accurate_over_its_range() {
            if crate::Isa::Neon.is_supported() {
                crate::expf::check(|lanes| {
                    let mut out = [0.0f32; 8];
                    for (src, dst) in lanes.chunks_exact(4).zip(out.chunks_exact_mut(4)) {
                        // SAFETY: NEON was detected; both chunks have 4 elements.
                        unsafe { vst1q_f32(dst.as_mut_ptr(), exp(vld1q_f32(src.as_ptr()))) };
                    }
                    out
                });
            }
        }
    }
}
