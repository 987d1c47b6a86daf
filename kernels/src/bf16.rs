//! bfloat16: an `f32`'s sign, exponent and top 7 fraction bits, held as the `u16` of its
//! bits. The reduced-precision GEMM stores weights this way and rounds activations to it
//! where they enter a product; everything else stays in `f32`.

/// `x` rounded to the nearest bf16, ties to even (as `vcvtneps2bf16` and PyTorch round);
/// a NaN stays a (quiet) NaN, infinities stay infinite, and values past bf16's largest
/// finite value round to infinity.
#[inline]
pub fn from_f32(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round_to_even = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round_to_even) >> 16) as u16
}

/// The `f32` a bf16 value stands for, exactly.
#[inline]
pub fn to_f32(bf16: u16) -> f32 {
    f32::from_bits(u32::from(bf16) << 16)
}

/// `x` rounded to bf16 and back.
#[inline]
pub fn round(x: f32) -> f32 {
    to_f32(from_f32(x))
}

/// Every value of `values` rounded to bf16.
pub fn from_f32_slice(values: &[f32]) -> Vec<u16> {
    values.iter().map(|&x| from_f32(x)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even_and_keeps_the_specials() {
        assert_eq!(round(1.0), 1.0);
        // 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷: ties go to the even 1.
        assert_eq!(round(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(round(-2.5), -2.5);
        assert!(round(f32::NAN).is_nan());
        assert_eq!(round(f32::INFINITY), f32::INFINITY);
        assert_eq!(round(f32::NEG_INFINITY), f32::NEG_INFINITY);
        assert_eq!(round(f32::MAX), f32::INFINITY);
        assert_eq!(from_f32(-0.0), 0x8000);
        // The relative error is at most 2⁻⁸ (half a unit in the 8-bit significand).
        for i in 0..10_000 {
            let x = (i as f32 * 0.377).sin() * 10f32.powi(i % 7 - 3);
            if x != 0.0 {
                assert!(((round(x) - x) / x).abs() <= 1.0 / 256.0, "{x}");
            }
        }
    }
}
