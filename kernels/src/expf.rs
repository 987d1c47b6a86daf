//! The vectorised exponentials, written once over [`F32s`]:
//! - `exp`, Cephes' `expf`: `e^x = 2^n · e^r` with `n = round(x·log2 e)` and
//!   `r = x − n·ln 2 ∈ [−ln2/2, ln2/2]`. Within 2 ulp; gradual underflow to 0 and overflow
//!   to +∞ as in `f32::exp`. For the activations, which have x86 kernels only.
//! - `exp_shifted`, attention's softmax `e^(x − shift)`, on every instruction set.

use crate::simd::F32s;
#[cfg(target_arch = "x86_64")]
use crate::simd::Transcendental;

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

/// `2^r ≈ 1 + r·Q(r)` for `r ∈ [−1/2, 1/2]`, by [`EXP2_POLY`].
#[inline(always)]
pub(crate) unsafe fn exp2_fraction<V: F32s>(r: V) -> V {
    let mut q = V::splat(EXP2_POLY[0]);
    for &c in &EXP2_POLY[1..] {
        q = q.fma(r, V::splat(c));
    }
    q.fma(r, V::splat(1.0))
}

/// `e^(x − shift)` for `x ≤ shift`, by [`EXP2_POLY`] and the instruction set's
/// [`F32s::exp2_nonpositive`]: results below 2^−126 may flush to 0 (AVX2, NEON). NaN
/// stays NaN.
#[inline(always)]
pub(crate) unsafe fn exp_shifted<V: F32s>(x: V, shift: V) -> V {
    V::exp2_nonpositive(x.sub(shift).mul(V::splat(std::f32::consts::LOG2_E)))
}

/// `e^x` by Cephes' `expf`; NaN stays NaN.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn exp<V: Transcendental>(x: V) -> V {
    // max/min return their second operand for NaN, so NaN passes through.
    let x = V::splat(MAX_ARG).min(V::splat(MIN_ARG).max(x));
    let n = x.mul(V::splat(std::f32::consts::LOG2_E)).round();
    let r = n.fnma(V::splat(LN2_HI), x);
    let r = n.fnma(V::splat(LN2_LO), r);
    let mut p = V::splat(POLY[0]);
    for &c in &POLY[1..] {
        p = p.fma(r, V::splat(c));
    }
    let y = p.mul(r).fma(r, r).add(V::splat(1.0));
    // n ∈ [−150, 128] passes the exponent range at both ends: y·2^n rounded once.
    y.ldexp(n)
}

/// `f` on 8 lanes at a time with `V`'s vectors: 16-lane vectors get the 8 lanes twice,
/// and must give the same bits in both halves.
///
/// # Safety
/// The CPU must support `V`'s instruction set.
#[cfg(test)]
pub(crate) unsafe fn on_8_lanes<V: F32s>(lanes: [f32; 8], f: impl Fn(V) -> V) -> [f32; 8] {
    let mut buffer = [0.0f32; 16];
    for (i, x) in buffer.iter_mut().enumerate() {
        *x = lanes[i % 8];
    }
    let width = V::LANES.max(8);
    for chunk in buffer[..width].chunks_exact_mut(V::LANES) {
        // SAFETY: the chunk has LANES elements.
        unsafe { f(V::load(chunk.as_ptr())).store(chunk.as_mut_ptr()) };
    }
    let (low, high) = buffer[..width].split_at(8);
    assert!(high
        .iter()
        .zip(low)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    low.try_into().unwrap()
}

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

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "aarch64")]
    use crate::simd::Neon;
    #[cfg(target_arch = "x86_64")]
    use crate::simd::{Avx2, Avx512};
    use crate::Isa;

    /// Checks `exp_shifted` on `V` where `isa` runs here.
    fn check_shifted_on<V: F32s>(isa: Isa) {
        if crate::runs_here(isa) {
            // SAFETY: the CPU supports `V`'s instruction set, checked just above.
            check_shifted(|lanes, shift| unsafe {
                on_8_lanes::<V>(lanes, |x| exp_shifted(x, V::splat(shift)))
            });
        }
    }

    #[test]
    fn exp_shifted_is_accurate_over_its_range() {
        #[cfg(target_arch = "x86_64")]
        {
            check_shifted_on::<Avx2>(Isa::Avx2Fma);
            check_shifted_on::<Avx512>(Isa::Avx512);
        }
        #[cfg(target_arch = "aarch64")]
        check_shifted_on::<Neon>(Isa::Neon);
    }

    #[cfg(target_arch = "x86_64")]
    fn check_on<V: Transcendental>(isa: Isa) {
        if crate::runs_here(isa) {
            // SAFETY: the CPU supports `V`'s instruction set, checked just above.
            check(|lanes| unsafe { on_8_lanes::<V>(lanes, |x| exp(x)) });
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp_is_accurate_over_its_range() {
        check_on::<Avx2>(Isa::Avx2Fma);
        check_on::<Avx512>(Isa::Avx512);
    }
}
