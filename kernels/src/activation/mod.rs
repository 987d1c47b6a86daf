//! Activation functions over slices, vectorised per instruction set.
//!
//! `Activation::apply` is the reference; the AVX2 versions here follow it to within a few
//! ulp (exact-erf GELU to ~1e-7 absolute) and are what the GEMM epilogue applies in
//! registers, so a fused GEMM and `activation_inplace` give the same bits. The AVX-512
//! versions repeat the AVX2 ones operation for operation on 16 lanes: the same bits again.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

use crate::{Activation, Isa};

/// Applies `act` to every element of `x` in place, with `isa`'s vector instructions.
///
/// Panics if this CPU lacks `isa`. Instruction sets without a vectorised version here
/// (NEON, scalar) run the reference.
pub fn activation_inplace(isa: Isa, act: Activation, x: &mut [f32]) {
    if act == Activation::Identity {
        return;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => {
            assert!(isa.is_supported(), "this CPU lacks {isa:?}");
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            unsafe { avx2::apply_slice(act, x) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            assert!(isa.is_supported(), "this CPU lacks {isa:?}");
            // SAFETY: the CPU supports AVX-512F, AVX2 and FMA, checked just above.
            unsafe { avx512::apply_slice(act, x) }
        }
        _ => crate::scalar::activation(act, x),
    }
}

/// erf on eight pieces of `[0, 4]`, each half a unit wide: piece `i` is a degree-6
/// Chebyshev fit in `t = 2|z| − i − 0.5 ∈ [−0.5, 0.5]`, within 7e-8 of erf after f32
/// rounding. Row `j` holds the coefficient of `t^(6 − j)` for the eight pieces, so that one
/// lane-wise permute picks each lane's coefficient: one polynomial per lane instead of a
/// blend of several.
#[cfg(target_arch = "x86_64")]
const ERF_PIECES: [[f32; 8]; 7] = [
    [
        -6.169975e-4,
        -4.1592537e-4,
        3.232006e-4,
        1.4123674e-4,
        -4.3674198e-5,
        -2.6040527e-5,
        -4.2574607e-6,
        -3.205026e-7,
    ],
    [
        2.4470985e-3,
        -1.6018725e-3,
        -1.4617854e-3,
        1.8654132e-4,
        3.3066343e-4,
        8.8307854e-5,
        1.0394056e-5,
        6.3136685e-7,
    ],
    [
        7.934272e-3,
        9.41744e-3,
        -3.8376273e-4,
        -3.0065347e-3,
        -1.1929247e-3,
        -2.0361428e-4,
        -1.7893095e-5,
        -8.626436e-7,
    ],
    [
        -3.8639553e-2,
        3.3408932e-3,
        2.0940388e-2,
        1.1272211e-2,
        2.7158714e-3,
        3.447757e-4,
        2.440247e-5,
        9.889808e-7,
    ],
    [
        -6.6250816e-2,
        -1.2054956e-1,
        -7.391289e-2,
        -2.3089057e-2,
        -4.0175477e-3,
        -4.0306617e-4,
        -2.371663e-5,
        -8.264189e-7,
    ],
    [
        5.300068e-1,
        3.2146576e-1,
        1.18260615e-1,
        2.6387418e-2,
        3.5711501e-3,
        2.9314714e-4,
        1.459682e-5,
        4.4094242e-7,
    ],
    [
        2.763264e-1,
        7.1115565e-1,
        9.2290014e-1,
        9.866717e-1,
        9.985373e-1,
        9.998994e-1,
        9.999957e-1,
        9.999999e-1,
    ],
];

/// `ERF_PIECES` halved (exactly), for GELU's `erf(x/√2)/2`. With `z = x/√2`, `2|z| − 0.5`
/// is `√2|x| − 0.5`: rounded to the nearest integer it is the piece, and the remainder is
/// `t` (a tie picks the neighbouring piece, evaluated at its own edge, t = ±0.5).
#[cfg(target_arch = "x86_64")]
pub(crate) const HALF_ERF_PIECES: [[f32; 8]; 7] = {
    let mut rows = ERF_PIECES;
    let mut j = 0;
    while j < rows.len() {
        let mut i = 0;
        while i < 8 {
            rows[j][i] *= 0.5;
            i += 1;
        }
        j += 1;
    }
    rows
};

/// The largest `√2|x| − 0.5` the pieces take: just under 7.5, so it rounds to the last
/// piece, at whose end (|z| = 4) erf/2 rounds to 1/2 in f32 and stays there.
#[cfg(target_arch = "x86_64")]
pub(crate) const LAST_OFFSET: f32 = f32::from_bits(7.5f32.to_bits() - 1);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Inputs near zero, in the curved range of every activation, and spread in magnitude
    /// up to 1e30 where the functions saturate, overflow internally or grow like x².
    fn input() -> impl Strategy<Value = f32> {
        prop_oneof![
            -1f32..1.0,
            -12f32..12.0,
            -120f32..120.0,
            (-30f32..30.0, any::<bool>()).prop_map(|(e, negative)| if negative {
                -(10f32.powf(e))
            } else {
                10f32.powf(e)
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::proptest_cases(400)))]

        #[test]
        fn vectorised_matches_the_reference(act in (0..Activation::ALL.len()).prop_map(|i| Activation::ALL[i]), xs in prop::collection::vec(input(), 1..40)) {
            for isa in [Isa::Avx512, Isa::Avx2Fma].into_iter().filter(|isa| isa.is_supported()) {
                let mut got = xs.clone();
                activation_inplace(isa, act, &mut got);
                for (&x, &g) in xs.iter().zip(&got) {
                    let want = act.apply(x);
                    // A few ulp of the result, measured against |x| rather than the result:
                    // the reference itself cancels in 1 + erf and 1 + tanh for negative x.
                    prop_assert!(g == want || (g - want).abs() <= 3e-7 * (1.0 + x.abs()), "{isa:?} {act:?}({x}) = {g}, want {want}");
                }
            }
        }

        #[test]
        fn avx512_gives_the_bits_of_avx2(act in (0..Activation::ALL.len()).prop_map(|i| Activation::ALL[i]), xs in prop::collection::vec(input(), 1..40)) {
            if !Isa::Avx512.is_supported() {
                return Ok(());
            }
            let (mut wide, mut narrow) = (xs.clone(), xs.clone());
            activation_inplace(Isa::Avx512, act, &mut wide);
            activation_inplace(Isa::Avx2Fma, act, &mut narrow);
            for ((&x, &w), &n) in xs.iter().zip(&wide).zip(&narrow) {
                prop_assert!(w.to_bits() == n.to_bits(), "{act:?}({x}): AVX-512 {w}, AVX2 {n}");
            }
        }
    }

    #[test]
    fn scalar_and_neon_run_the_reference() {
        let xs: Vec<f32> = (-50..50).map(|i| i as f32 * 0.25).collect();
        for act in Activation::ALL {
            for isa in [Isa::Scalar, Isa::Neon] {
                let mut got = xs.clone();
                activation_inplace(isa, act, &mut got);
                assert!(
                    got.iter()
                        .zip(&xs)
                        .all(|(g, &x)| g.to_bits() == act.apply(x).to_bits()),
                    "{act:?} on {isa:?}"
                );
            }
        }
    }
}
