//! Bicubic resampling of the position-embedding grid, as PyTorch's
//! `interpolate(mode="bicubic", align_corners=False, size=...)` computes it.

/// PyTorch's cubic convolution constant.
const A: f32 = -0.75;

/// Resizes a channels-last grid `[in_h, in_w, dim]` to `[out_h, out_w, dim]`.
pub fn bicubic(
    src: &[f32],
    in_h: usize,
    in_w: usize,
    dim: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<f32> {
    let rows: Vec<_> = (0..out_h).map(|y| taps(y, in_h, out_h)).collect();
    let cols: Vec<_> = (0..out_w).map(|x| taps(x, in_w, out_w)).collect();
    let mut out = vec![0.0f32; out_h * out_w * dim];
    for (y, (ys, wy)) in rows.iter().enumerate() {
        for (x, (xs, wx)) in cols.iter().enumerate() {
            let dst = &mut out[(y * out_w + x) * dim..][..dim];
            for (&sy, &weight_y) in ys.iter().zip(wy) {
                for c in 0..dim {
                    let mut along_x = 0.0f32;
                    for (&sx, &weight_x) in xs.iter().zip(wx) {
                        along_x += src[(sy * in_w + sx) * dim + c] * weight_x;
                    }
                    dst[c] += along_x * weight_y;
                }
            }
        }
    }
    out
}

/// The four source indices (clamped to the edge) and weights for output index `i`.
fn taps(i: usize, in_size: usize, out_size: usize) -> ([usize; 4], [f32; 4]) {
    let scale = in_size as f32 / out_size as f32;
    // Cubic sampling does not clamp the source coordinate at 0, unlike linear.
    let real = scale * (i as f32 + 0.5) - 0.5;
    let floor = real.floor();
    let t = real - floor;
    let index = |k: i64| (floor as i64 - 1 + k).clamp(0, in_size as i64 - 1) as usize;
    let weights = [
        cubic_far(t + 1.0),
        cubic_near(t),
        cubic_near(1.0 - t),
        cubic_far(2.0 - t),
    ];
    ([index(0), index(1), index(2), index(3)], weights)
}

/// Kernel weight for distance |x| ≤ 1.
fn cubic_near(x: f32) -> f32 {
    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
}

/// Kernel weight for distance 1 < |x| < 2.
fn cubic_far(x: f32) -> f32 {
    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity() {
        let src: Vec<f32> = (0..3 * 4 * 2).map(|v| v as f32 * 0.37 - 1.0).collect();
        let out = bicubic(&src, 3, 4, 2, 3, 4);
        for (a, b) in src.iter().zip(&out) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn constant_grid_stays_constant() {
        let src = vec![2.5f32; 4 * 4];
        let out = bicubic(&src, 4, 4, 1, 7, 3);
        assert!(out.iter().all(|v| (v - 2.5).abs() < 1e-5));
    }
}
