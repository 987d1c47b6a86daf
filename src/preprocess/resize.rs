//! Pillow's `Image.resize` for 8-bit RGB images, reproduced so that the resized bytes are the
//! ones transformers feeds to the model.
//!
//! Every filter but nearest is Pillow's separable convolution: a horizontal pass over only the
//! rows the vertical pass will read, then a vertical pass. Each output sample has its own window
//! of input samples; when shrinking, the filter is stretched by the scale so that it averages
//! over everything it covers (antialiasing). Weights are computed in f64, normalised to sum to
//! one, then turned into fixed-point integers with 22 fractional bits; each pass rounds and
//! clips its sums to `u8`. Nearest is Pillow's affine scaling, which samples the input at each
//! output pixel's centre, stepping through the input by accumulated f64 increments.

use super::{Resample, Rgb8};

/// Pillow's `PRECISION_BITS`: fractional bits of the fixed-point weights for 8-bit images.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Resizes `src` to `width` x `height` as Pillow's `Image.resize((width, height), filter)` does.
pub(crate) fn resize(src: &Rgb8, width: usize, height: usize, filter: Resample) -> Rgb8 {
    if (src.width, src.height) == (width, height) {
        return src.clone();
    }
    if filter == Resample::Nearest {
        return nearest(src, width, height);
    }
    let horizontal = Weights::new(src.width, width, filter);
    if height == src.height {
        return convolve_rows(src, 0, src.height, &horizontal);
    }
    let vertical = Weights::new(src.height, height, filter);
    if width == src.width {
        return convolve_columns(src, 0, &vertical);
    }
    // The first pass computes only the rows some output row reads, as Pillow's does.
    let first = vertical.windows[0].0;
    let last = vertical
        .windows
        .iter()
        .map(|&(s, n)| s + n)
        .max()
        .unwrap_or(first);
    let rows = convolve_rows(src, first, last, &horizontal);
    convolve_columns(&rows, first, &vertical)
}

/// Fixed-point weights of one axis: for each output sample, its input window `(start, len)`
/// and `len` weights at `offset = index * stride`.
struct Weights {
    windows: Vec<(usize, usize)>,
    weights: Vec<i32>,
    stride: usize,
}

impl Weights {
    /// Pillow's `precompute_coeffs` over the whole axis, then `normalize_coeffs_8bpc`.
    fn new(in_size: usize, out_size: usize, filter: Resample) -> Self {
        let (support, kernel) = filter_kernel(filter);
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = support * filter_scale;
        let stride = support.ceil() as usize * 2 + 1;
        let inverse_scale = 1.0 / filter_scale;
        let mut windows = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * stride];
        let mut window = Vec::with_capacity(stride);
        for (out, slot) in weights.chunks_exact_mut(stride).enumerate() {
            let center = (out as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero, then the window is clamped to the axis.
            let start = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let len = end.saturating_sub(start).min(stride);
            window.clear();
            window.extend(
                (0..len).map(|i| kernel(((i + start) as f64 - center + 0.5) * inverse_scale)),
            );
            let total: f64 = window.iter().sum();
            for (w, s) in window.iter().zip(slot.iter_mut()) {
                let w = if total != 0.0 { w / total } else { *w };
                *s = to_fixed(w);
            }
            windows.push((start, len));
        }
        Self {
            windows,
            weights,
            stride,
        }
    }

    fn of(&self, out: usize) -> &[i32] {
        let offset = out * self.stride;
        &self.weights[offset..offset + self.windows[out].1]
    }
}

/// Pillow's rounding of a weight to fixed point: half away from zero, then truncation.
fn to_fixed(w: f64) -> i32 {
    let scaled = w * f64::from(1u32 << PRECISION_BITS);
    if w < 0.0 {
        (scaled - 0.5) as i32
    } else {
        (scaled + 0.5) as i32
    }
}

/// A fixed-point sum (already holding the rounding half) back to `u8`, clipped.
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// The horizontal pass over rows `first..last` of `src`.
fn convolve_rows(src: &Rgb8, first: usize, last: usize, weights: &Weights) -> Rgb8 {
    let width = weights.windows.len();
    let mut data = Vec::with_capacity((last - first) * width * 3);
    for row in src.data.chunks_exact(src.width * 3).take(last).skip(first) {
        for (out, &(start, _)) in weights.windows.iter().enumerate() {
            let mut sums = [HALF; 3];
            for (i, &w) in weights.of(out).iter().enumerate() {
                let pixel = &row[(start + i) * 3..(start + i) * 3 + 3];
                for (sum, &v) in sums.iter_mut().zip(pixel) {
                    *sum += i32::from(v) * w;
                }
            }
            data.extend(sums.map(clip8));
        }
    }
    Rgb8 {
        width,
        height: last - first,
        data,
    }
}

/// The vertical pass; `rows` holds input rows from `first_row` on.
fn convolve_columns(rows: &Rgb8, first_row: usize, weights: &Weights) -> Rgb8 {
    let stride = rows.width * 3;
    let mut data = Vec::with_capacity(weights.windows.len() * stride);
    for (out, &(start, _)) in weights.windows.iter().enumerate() {
        let start = start - first_row;
        let taps = weights.of(out);
        for x in 0..stride {
            let mut sum = HALF;
            for (i, &w) in taps.iter().enumerate() {
                sum += i32::from(rows.data[(start + i) * stride + x]) * w;
            }
            data.push(clip8(sum));
        }
    }
    Rgb8 {
        width: rows.width,
        height: weights.windows.len(),
        data,
    }
}

/// Pillow's nearest resize: `ImagingScaleAffine` with the half-pixel offset, positions stepped
/// by repeated addition as Pillow does (which can differ from multiplication in the last bit).
fn nearest(src: &Rgb8, width: usize, height: usize) -> Rgb8 {
    let positions = |in_size: usize, out_size: usize| -> Vec<usize> {
        let step = in_size as f64 / out_size as f64;
        let mut position = step * 0.5;
        (0..out_size)
            .map(|_| {
                let index = (position.max(0.0) as usize).min(in_size - 1);
                position += step;
                index
            })
            .collect()
    };
    let xs = positions(src.width, width);
    let mut data = Vec::with_capacity(width * height * 3);
    for y in positions(src.height, height) {
        let row = &src.data[y * src.width * 3..(y + 1) * src.width * 3];
        for &x in &xs {
            data.extend_from_slice(&row[x * 3..x * 3 + 3]);
        }
    }
    Rgb8 {
        width,
        height,
        data,
    }
}

/// Pillow's filters: support radius (before scaling) and the kernel.
fn filter_kernel(filter: Resample) -> (f64, fn(f64) -> f64) {
    match filter {
        Resample::Box => (0.5, box_kernel),
        Resample::Bilinear | Resample::Nearest => (1.0, triangle),
        Resample::Hamming => (1.0, hamming),
        Resample::Bicubic => (2.0, bicubic),
        Resample::Lanczos => (3.0, lanczos),
    }
}

fn box_kernel(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 {
        1.0
    } else {
        0.0
    }
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn hamming(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        1.0
    } else if x >= 1.0 {
        0.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x * (0.54 + 0.46 * x.cos())
    }
}

/// Keys' cubic with a = -0.5, as Pillow's bicubic.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}
