//! Cephes' `expf`, which the vectorised `exp` of each instruction set evaluates:
//! `e^x = 2^n · e^r` with `n = round(x·log2 e)` and `r = x − n·ln 2 ∈ [−ln2/2, ln2/2]`.
//! Within 2 ulp; gradual underflow to 0 and overflow to +∞ as in `f32::exp`.

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
