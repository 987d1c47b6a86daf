//! 8-bit quantization for the int8 GEMM, as ONNX Runtime's and PyTorch's dynamic
//! quantization do it: weights once, symmetric per output channel
//! (`w ≈ scale · q`, `q ∈ [−127, 127]`); activations per row (token) on the fly,
//! asymmetric (`a ≈ scale · (q − zero)`, `q ∈ [0, 255]`, the row's range widened to hold 0
//! so that 0 is exact). The GEMM then sums `q_a · q_w` in `i32` exactly, and
//! `scale_a · scale_w · (Σ q_a·q_w − zero · Σ q_w)` is the product.

/// One row of A quantized: `a ≈ scale · (q − zero)`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RowQuant {
    pub scale: f32,
    pub zero: i32,
}

/// Adding then subtracting 1.5·2²³ rounds an `f32` of magnitude below 2²² to the nearest
/// integer, ties to even, with plain additions that vectorise on any x86-64 (rounding
/// instructions need SSE4.1).
const ROUNDER: f32 = 12_582_912.0;

/// Quantizes `row` into `out` (as long as `row`) and returns its scale and zero point. A
/// row of zeros gets scale 1 and zero 0; a row with NaN or infinite values gives a
/// non-finite scale, so the product is NaN as in `f32`.
///
/// The same operations whatever the CPU; on an AVX-512 CPU they are compiled with its
/// instructions (the body vectorises 16 wide), which changes no result.
pub fn quantize_row(row: &[f32], out: &mut [u8]) -> RowQuant {
    #[cfg(target_arch = "x86_64")]
    if crate::Isa::Avx512.is_supported() && std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has AVX-512F and BW, checked just above.
        return unsafe { quantize_row_avx512(row, out) };
    }
    quantize_row_body(row, out)
}

/// # Safety
/// The CPU must have AVX-512F and AVX-512BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn quantize_row_avx512(row: &[f32], out: &mut [u8]) -> RowQuant {
    quantize_row_body(row, out)
}

/// Lanes of the running extremes: independent, so the folds vectorise.
const LANES: usize = 16;

#[inline(always)]
fn quantize_row_body(row: &[f32], out: &mut [u8]) -> RowQuant {
    let mut lows = [0.0f32; LANES];
    let mut highs = [0.0f32; LANES];
    // x·0 is 0, or NaN for a NaN or infinite x: their sum says whether the row is finite.
    let mut non_finite = [0.0f32; LANES];
    let mut take = |i: usize, x: f32| {
        lows[i] = lows[i].min(x);
        highs[i] = highs[i].max(x);
        non_finite[i] += x * 0.0;
    };
    let (chunks, tail) = row.as_chunks::<LANES>();
    for chunk in chunks {
        for (i, &x) in chunk.iter().enumerate() {
            take(i, x);
        }
    }
    for (i, &x) in tail.iter().enumerate() {
        take(i, x);
    }
    let low = lows.iter().fold(0.0f32, |m, &x| m.min(x));
    let high = highs.iter().fold(0.0f32, |m, &x| m.max(x));
    let finite = non_finite.iter().sum::<f32>() == 0.0;
    let span = high - low;
    let scale = if span == 0.0 {
        1.0
    } else if finite && span.is_finite() {
        span / 255.0
    } else {
        f32::NAN
    };
    let inverse = 1.0 / scale;
    // −low/scale lies in [0, 255]; the clamp only guards rounding at the ends.
    let zero = ((-low * inverse + ROUNDER) - ROUNDER).clamp(0.0, 255.0);
    for (q, &x) in out[..row.len()].iter_mut().zip(row) {
        // Clamped to [0, 255] (`max` turns the NaN of a non-finite row into 0: the row's
        // NaN scale carries the NaN instead), then rounded to the nearest integer, ties to
        // even, by the ROUNDER addition, which leaves the integer in the low mantissa
        // bits: conversions that vectorise, unlike a saturating `as`.
        #[allow(clippy::manual_clamp)]
        let clamped = (x * inverse + zero).max(0.0).min(255.0);
        *q = (clamped + ROUNDER).to_bits() as u8;
    }
    RowQuant {
        scale,
        zero: zero as i32,
    }
}

/// The `f32` value a quantized A entry stands for.
pub fn dequantize_row_value(q: u8, row: RowQuant) -> f32 {
    row.scale * (i32::from(q) - row.zero) as f32
}

/// `w[n×k]` quantized per row (output channel), symmetric: the values (row-major, as `w`)
/// and one scale per row. A row of zeros gets scale 1.
pub fn quantize_weights(n: usize, k: usize, w: &[f32]) -> (Vec<i8>, Vec<f32>) {
    let mut values = vec![0i8; n * k];
    let mut scales = vec![1.0f32; n];
    for ((row, q_row), scale) in w[..n * k]
        .chunks_exact(k.max(1))
        .zip(values.chunks_exact_mut(k.max(1)))
        .zip(&mut scales)
    {
        let largest = row.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        if largest > 0.0 {
            *scale = largest / 127.0;
        }
        for (q, &x) in q_row.iter_mut().zip(row) {
            // The ROUNDER pair rounds ties to even without a call to `rintf`.
            *q = ((x / *scale + ROUNDER) - ROUNDER).clamp(-127.0, 127.0) as i8;
        }
    }
    (values, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_keeps_zero_exact_and_errs_by_half_a_step() {
        let row: Vec<f32> = (0..300)
            .map(|i| ((i as f32) * 0.71).sin() * 3.0 + 0.5)
            .collect();
        let mut q = vec![0u8; row.len()];
        let rq = quantize_row(&row, &mut q);
        assert!(q.contains(&0) || q.contains(&255));
        for (&x, &v) in row.iter().zip(&q) {
            let back = dequantize_row_value(v, rq);
            assert!((back - x).abs() <= rq.scale * 0.5001, "{x} → {back}");
        }
        assert_eq!(dequantize_row_value(rq.zero as u8, rq), 0.0);
    }

    #[test]
    fn degenerate_rows() {
        let mut q = [7u8; 4];
        assert_eq!(
            quantize_row(&[0.0; 4], &mut q),
            RowQuant {
                scale: 1.0,
                zero: 0
            }
        );
        assert_eq!(q, [0; 4]);
        // All positive: the range is widened to 0, so zero is 0.
        let rq = quantize_row(&[1.0, 2.0, 4.0, 3.0], &mut q);
        assert_eq!(rq.zero, 0);
        assert_eq!(q[2], 255);
        // All negative: zero is 255.
        let rq = quantize_row(&[-1.0, -2.0, -4.0, -3.0], &mut q);
        assert_eq!(rq.zero, 255);
        assert_eq!(q[2], 0);
        assert!(quantize_row(&[1.0, f32::NAN], &mut q).scale.is_nan());
        assert!(quantize_row(&[1.0, f32::INFINITY], &mut q).scale.is_nan());
    }

    #[test]
    fn weights_are_symmetric_per_row() {
        let w = [0.5, -1.0, 0.25, 0.0, 0.0, 0.0, 2.0, 1.0, -0.01];
        let (q, scales) = quantize_weights(3, 3, &w);
        assert_eq!(&q[..3], &[64, -127, 32]);
        assert_eq!(scales[1], 1.0);
        assert_eq!(&q[3..6], &[0, 0, 0]);
        assert_eq!(q[6], 127);
        assert_eq!(scales[2], 2.0 / 127.0);
    }
}
