//! The vectorised exponentials, one of each per instruction set that needs it:
//! - `exp`, Cephes' `expf`: `e^x = 2^n · e^r` with `n = round(x·log2 e)` and
//!   `r = x − n·ln 2 ∈ [−ln2/2, ln2/2]`. Within 2 ulp; gradual underflow to 0 and overflow
//!   to +∞ as in `f32::exp`. For the activations, which have x86 kernels only.
//! - `exp_shifted`, attention's softmax `e^(x − shift)`, on every instruction set.

/// ln 2 split so that `n·LN2_HI` is exact for the `n` that occur (Cody–Waite).
#[cfg(target_arch = "x86_64")]
pub(crate) const LN2_HI: f32 = 0.693_359_4;
#[cfg(target_arch = "x86_64")]
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// `e^x` rounds to 0 below this; arguments are clamped to it so that `n` stays in range.
#[cfg(target_arch = "x86_64")]
pub(crate) const MIN_ARG: f32 = -104.0;
/// `e^x` overflows above this; arguments are clamped to it likewise.
#[cfg(target_arch = "x86_64")]
pub(crate) const MAX_ARG: f32 = 89.0;
/// `e^r ≈ 1 + r + r²·P(r)`; the coefficients of `P`, highest degree first.
#[cfg(target_arch = "x86_64")]
pub(crate) const POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// The softmax's `e^(x − shift)` for `x ≤ shift` is `2^t` with `t = (x − shift)·log2 e`,
/// split into `n = round(t)` and `r = t − n ∈ [−1/2, 1/2]`: `2^r ≈ 1 + r·Q(r)` (Cephes'
/// `exp2f`). That needs no Cody–Waite reduction and one scaling by `2^n`, about a third
/// fewer operations than `exp`. Rounding `t` costs accuracy in proportion to `|t|`, but
/// only for terms far below the row's largest, which is 1 and dominates the sum.
/// `Q`'s coefficients, highest degree first.
pub(crate) const EXP2_POLY: [f32; 6] = [
    1.535_336_2e-4,
    1.339_887_4e-3,
    9.618_437e-3,
    5.550_332_5e-2,
    2.402_264_8e-1,
    6.931_472e-1,
];
/// Below this `t` the result is 0 (−∞ included): AVX2 and NEON clamp `t` to it, where
/// `2^n` built from exponent bits is 0, and AVX-512 masks the lanes. It also keeps `n`
/// inside the exponent range.
pub(crate) const EXP2_MIN_ARG: f32 = -127.0;

/// Checks a vectorised `exp_shifted`, applied to 8 lanes at a time, against `f64::exp`
/// where `x ≤ shift`, and at special values.
#[cfg(test)]
pub(crate) fn check_shifted(exp_shifted: impl Fn([f32; 8], f32) -> [f32; 8]) {
    for shift in [0.0f32, 7.25, -3.1, 41.0] {
        let mut x = shift - 87.0;
        while x <= shift {
            let lanes: [f32; 8] = std::array::from_fn(|i| (x + i as f32 * 1.37e-3).min(shift));
            for (a, x) in exp_shifted(lanes, shift).iter().zip(lanes) {
                let d = x as f64 - shift as f64;
                let exact = d.exp();
                // Rounding t costs about |t| units of 2^-24 in its exponent.
                let bound = 2.5e-7 + 1.2e-7 * d.abs() * std::f64::consts::LOG2_E;
                assert!(
                    ((*a as f64 - exact) / exact).abs() < bound,
                    "e^({x} − {shift}) = {a}, not {exact}"
                );
            }
            x += 0.0117;
        }
    }
    let special = [
        5.0,
        f32::NEG_INFINITY,
        -1000.0,
        f32::NAN,
        4.999_999_5,
        -85.0,
        -83.0,
        5.0,
    ];
    let out = exp_shifted(special, 5.0);
    assert!(out[0] == 1.0 && out[7] == 1.0, "e^0 is 1: {out:?}");
    assert!(out[1] == 0.0 && out[2] == 0.0 && out[3].is_nan(), "{out:?}");
    assert!(out[4] < 1.0 && out[4] > 0.999_999);
    // e^−90 is 2^−129.8: flushed to 0 or a subnormal; e^−88 is 2^−126.96, near the edge.
    assert!(
        out[5] < 1e-38 && out[6] < 1.2e-38 && out[6] >= 0.0,
        "{out:?}"
    );
}

/// Checks a vectorised `exp`, applied to 8 lanes at a time, against `f64::exp` over its
/// range and at special values.
#[cfg(target_arch = "x86_64")]
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

    /// `e^(x − shift)` on 8 lanes for `x ≤ shift`, by [`EXP2_POLY`](super::EXP2_POLY);
    /// results below 2^−126 may flush to 0. NaN stays NaN.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn exp_shifted(x: __m256, shift: __m256) -> __m256 {
        let t = _mm256_mul_ps(
            _mm256_sub_ps(x, shift),
            _mm256_set1_ps(std::f32::consts::LOG2_E),
        );
        // max returns its second operand for NaN, so NaN passes through.
        let t = _mm256_max_ps(_mm256_set1_ps(super::EXP2_MIN_ARG), t);
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let r = _mm256_sub_ps(t, n);
        let mut q = _mm256_set1_ps(super::EXP2_POLY[0]);
        for c in &super::EXP2_POLY[1..] {
            q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(*c));
        }
        // n ∈ [−127, 0], and 2^−127 from its exponent bits is 0.
        _mm256_mul_ps(
            _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0)),
            power_of_two(_mm256_cvtps_epi32(n)),
        )
    }

    /// `2^k` for integer lanes `k ∈ [−126, 127]`, and 0 for `k = −127`.
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
        fn exp_shifted_is_accurate_over_its_range() {
            if crate::Isa::Avx2Fma.is_supported() {
                crate::expf::check_shifted(|lanes, shift| {
                    let mut out = [0.0f32; 8];
                    // SAFETY: AVX2 and FMA were detected; both arrays have 8 lanes.
                    unsafe {
                        let x = _mm256_loadu_ps(lanes.as_ptr());
                        _mm256_storeu_ps(out.as_mut_ptr(), exp_shifted(x, _mm256_set1_ps(shift)))
                    };
                    out
                });
            }
        }

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

    /// `e^(x − shift)` on 16 lanes for `x ≤ shift`, by [`EXP2_POLY`](super::EXP2_POLY).
    /// NaN stays NaN.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn exp_shifted(x: __m512, shift: __m512) -> __m512 {
        let t = _mm512_mul_ps(
            _mm512_sub_ps(x, shift),
            _mm512_set1_ps(std::f32::consts::LOG2_E),
        );
        // Lanes below the minimum (−∞ too, whose r would be NaN) become 0; NaN compares
        // unordered, stays in, and passes through.
        let keep = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(t, _mm512_set1_ps(super::EXP2_MIN_ARG));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let r = _mm512_sub_ps(t, n);
        let mut q = _mm512_set1_ps(super::EXP2_POLY[0]);
        for c in &super::EXP2_POLY[1..] {
            q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(*c));
        }
        _mm512_maskz_scalef_ps(keep, _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0)), n)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn exp_shifted_is_accurate_over_its_range() {
            if crate::Isa::Avx512.is_supported() {
                crate::expf::check_shifted(|lanes, shift| {
                    let mut both = [0.0f32; 16];
                    both[..8].copy_from_slice(&lanes);
                    both[8..].copy_from_slice(&lanes);
                    // SAFETY: AVX-512F was detected; `both` has 16 lanes.
                    unsafe {
                        let x = _mm512_loadu_ps(both.as_ptr());
                        _mm512_storeu_ps(both.as_mut_ptr(), exp_shifted(x, _mm512_set1_ps(shift)))
                    };
                    both[..8].try_into().unwrap()
                });
            }
        }

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

    /// `e^(x − shift)` on 4 lanes for `x ≤ shift`, by [`EXP2_POLY`](super::EXP2_POLY);
    /// results below 2^−126 may flush to 0. NaN stays NaN.
    #[inline]
    #[target_feature(enable = "neon")]
    pub(crate) unsafe fn exp_shifted(x: float32x4_t, shift: float32x4_t) -> float32x4_t {
        let t = vmulq_n_f32(vsubq_f32(x, shift), std::f32::consts::LOG2_E);
        // NEON's max returns NaN if either operand is NaN.
        let t = vmaxq_f32(vdupq_n_f32(super::EXP2_MIN_ARG), t);
        let n = vrndnq_f32(t);
        let r = vsubq_f32(t, n);
        let mut q = vdupq_n_f32(super::EXP2_POLY[0]);
        for c in &super::EXP2_POLY[1..] {
            q = vfmaq_f32(vdupq_n_f32(*c), q, r);
        }
        // n ∈ [−127, 0], and 2^−127 from its exponent bits is 0.
        vmulq_f32(
            vfmaq_f32(vdupq_n_f32(1.0), q, r),
            power_of_two(vcvtq_s32_f32(n)),
        )
    }

    /// `2^k` for integer lanes `k ∈ [−126, 127]`, and 0 for `k = −127`.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn power_of_two(k: int32x4_t) -> float32x4_t {
        vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(k, vdupq_n_s32(127))))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn exp_shifted_is_accurate_over_its_range() {
            if crate::Isa::Neon.is_supported() {
                crate::expf::check_shifted(|lanes, shift| {
                    let mut out = [0.0f32; 8];
                    for (src, dst) in lanes.chunks_exact(4).zip(out.chunks_exact_mut(4)) {
                        // SAFETY: NEON was detected; both chunks have 4 elements.
                        unsafe {
                            let x = vld1q_f32(src.as_ptr());
                            vst1q_f32(dst.as_mut_ptr(), exp_shifted(x, vdupq_n_f32(shift)));
                        }
                    }
                    out
                });
            }
        }
    }
}
