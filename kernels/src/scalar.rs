//! Scalar reference kernels: plain loops in f32, written to be read, not to be fast.
//!
//! Every optimised kernel in this crate is property-tested against the function of the
//! same name here, and the `scalar` backend of the engine runs these directly.

use crate::{Activation, AttentionShape, Epilogue};

/// `c[m×n] = epilogue(a[m×k] · wᵀ)` with `w` stored `[n×k]` (the PyTorch `nn.Linear` layout).
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    w: &[f32],
    c: &mut [f32],
    epilogue: &Epilogue,
) {
    assert!(a.len() >= m * k && w.len() >= n * k && c.len() >= m * n);
    for i in 0..m {
        let row = &a[i * k..(i + 1) * k];
        for j in 0..n {
            let col = &w[j * k..(j + 1) * k];
            let dot: f32 = row.iter().zip(col).map(|(x, y)| x * y).sum();
            c[i * n + j] = dot;
        }
    }
    apply_epilogue(m, n, c, epilogue);
}

/// [`gemm`] with bf16 weights (their bits): each value of `a` rounded to bf16, the exact
/// products of bf16 values summed in `f32`.
pub fn gemm_bf16(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    w: &[u16],
    c: &mut [f32],
    epilogue: &Epilogue,
) {
    let a: Vec<f32> = a[..m * k].iter().map(|&x| crate::bf16::round(x)).collect();
    let w: Vec<f32> = w[..n * k].iter().map(|&x| crate::bf16::to_f32(x)).collect();
    gemm(m, n, k, &a, &w, c, epilogue);
}

/// [`gemm`] with int8 weights (`w[j][p] ≈ scales[j] · values[j][p]`): each row of `a`
/// quantized by [`quant::quantize_row`](crate::quant::quantize_row), the products of the
/// 8-bit values summed exactly in `i32`, and the sum dequantized as
/// `(a_scale · w_scale) · (sum − a_zero · Σ values[j])`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_int8(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    values: &[i8],
    scales: &[f32],
    c: &mut [f32],
    epilogue: &Epilogue,
) {
    assert!(a.len() >= m * k && values.len() >= n * k && c.len() >= m * n);
    let mut quantized = vec![0u8; k];
    for i in 0..m {
        let row = crate::quant::quantize_row(&a[i * k..(i + 1) * k], &mut quantized);
        for j in 0..n {
            let column = &values[j * k..(j + 1) * k];
            let dot: i32 = quantized
                .iter()
                .zip(column)
                .map(|(&x, &y)| i32::from(x) * i32::from(y))
                .sum();
            let column_sum: i32 = column.iter().map(|&y| i32::from(y)).sum();
            c[i * n + j] = (dot - row.zero * column_sum) as f32 * (row.scale * scales[j]);
        }
    }
    apply_epilogue(m, n, c, epilogue);
}

/// Applies bias, activation and residual (in that order) to a finished `m×n` product.
pub fn apply_epilogue(m: usize, n: usize, c: &mut [f32], epilogue: &Epilogue) {
    for i in 0..m {
        let row = &mut c[i * n..(i + 1) * n];
        if let Some(bias) = epilogue.bias {
            row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
        }
        activation(epilogue.activation, row);
        if let Some(residual) = epilogue.residual {
            let res = &residual[i * n..(i + 1) * n];
            row.iter_mut().zip(res).for_each(|(x, r)| *x += r);
        }
    }
}

/// Row-wise LayerNorm over `dim` features: `(x - mean) / sqrt(var + eps) * gamma + beta`.
pub fn layer_norm(dim: usize, x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    for (row, out_row) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let mean = row.iter().sum::<f32>() / dim as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for j in 0..dim {
            out_row[j] = (row[j] - mean) * inv * gamma[j] + beta[j];
        }
    }
}

/// Applies `act` elementwise in place.
pub fn activation(act: Activation, x: &mut [f32]) {
    if act != Activation::Identity {
        x.iter_mut().for_each(|v| *v = act.apply(*v));
    }
}

/// Multi-head self-attention over a fused `qkv` tensor.
///
/// `qkv` is `[batch, tokens, 3·hidden]` with query, key and value side by side in each row
/// (hidden = heads·head_dim, head h at columns `h·head_dim..`). `context` receives
/// `[batch, tokens, hidden]`. `head_scale[h]` multiplies the probabilities of head `h`
/// (transformers' `head_mask`). `probs`, when given, receives the scaled probabilities
/// `[batch, heads, tokens, tokens]`.
pub fn attention(
    shape: AttentionShape,
    qkv: &[f32],
    head_scale: &[f32],
    context: &mut [f32],
    mut probs: Option<&mut [f32]>,
) {
    let AttentionShape {
        batch,
        tokens,
        heads,
        head_dim,
    } = shape;
    let hidden = heads * head_dim;
    let row_stride = 3 * hidden;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut scores = vec![0.0f32; tokens];
    for b in 0..batch {
        let base = b * tokens * row_stride;
        for h in 0..heads {
            for i in 0..tokens {
                let q = &qkv[base + i * row_stride + h * head_dim..][..head_dim];
                for (j, s) in scores.iter_mut().enumerate() {
                    let k = &qkv[base + j * row_stride + hidden + h * head_dim..][..head_dim];
                    *s = q.iter().zip(k).map(|(x, y)| x * y).sum::<f32>() * scale;
                }
                softmax(&mut scores);
                scores.iter_mut().for_each(|p| *p *= head_scale[h]);
                let out = &mut context[(b * tokens + i) * hidden + h * head_dim..][..head_dim];
                out.fill(0.0);
                for (j, p) in scores.iter().enumerate() {
                    let v = &qkv[base + j * row_stride + 2 * hidden + h * head_dim..][..head_dim];
                    out.iter_mut().zip(v).for_each(|(o, v)| *o += p * v);
                }
                if let Some(probs) = probs.as_deref_mut() {
                    probs[((b * heads + h) * tokens + i) * tokens..][..tokens]
                        .copy_from_slice(&scores);
                }
            }
        }
    }
}

/// Numerically stable softmax of one row, in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    x.iter_mut().for_each(|v| *v /= sum);
}

/// Rearranges `[batch, channels, height, width]` pixels into one row per patch,
/// `[batch·(height/p)·(width/p), channels·p·p]`, in the `(channel, y, x)` order of a
/// `Conv2d` weight, so that a stride-`p` convolution becomes one GEMM. Rows and columns
/// beyond the last whole patch are dropped, as the convolution drops them.
pub fn im2col(
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    p: usize,
    pixels: &[f32],
    out: &mut [f32],
) {
    let rows = batch * (height / p) * (width / p);
    let out = &mut out[..rows * channels * p * p];
    im2col_rows(channels, height, width, p, pixels, 0, out);
}

/// The patch rows of [`im2col`] from row `first` on, as many as `out` holds whole.
pub fn im2col_rows(
    channels: usize,
    height: usize,
    width: usize,
    p: usize,
    pixels: &[f32],
    first: usize,
    out: &mut [f32],
) {
    let (gh, gw) = (height / p, width / p);
    let row_len = channels * p * p;
    for (i, row) in (first..).zip(out.chunks_exact_mut(row_len.max(1))) {
        let (b, py, px) = (i / (gh * gw), i / gw % gh, i % gw);
        for c in 0..channels {
            for y in 0..p {
                let src = ((b * channels + c) * height + py * p + y) * width + px * p;
                row[(c * p + y) * p..][..p].copy_from_slice(&pixels[src..src + p]);
            }
        }
    }
}

/// Replaces the patch embeddings whose mask is non-zero by `mask_token`
/// (`embeddings · (1 − mask) + mask_token · mask`, as transformers blends them).
pub fn mask_blend(
    dim: usize,
    embeddings: &[f32],
    mask: &[f32],
    mask_token: &[f32],
    out: &mut [f32],
) {
    for ((row, out_row), &m) in embeddings
        .chunks_exact(dim)
        .zip(out.chunks_exact_mut(dim))
        .zip(mask)
    {
        for j in 0..dim {
            out_row[j] = row[j] * (1.0 - m) + mask_token[j] * m;
        }
    }
}

/// Prepends the CLS token to each image's patch embeddings and adds the position
/// embeddings: `[batch, patches, dim]` → `[batch, patches + 1, dim]`.
pub fn cls_and_position(
    batch: usize,
    patches: usize,
    dim: usize,
    embeddings: &[f32],
    cls: &[f32],
    position: &[f32],
    out: &mut [f32],
) {
    let out = &mut out[..batch * (patches + 1) * dim];
    cls_and_position_rows(patches, dim, embeddings, cls, position, 0, out);
}

/// The token rows of [`cls_and_position`] from row `first` (of `batch · (patches + 1)`)
/// on, as many as `out` holds whole.
pub fn cls_and_position_rows(
    patches: usize,
    dim: usize,
    embeddings: &[f32],
    cls: &[f32],
    position: &[f32],
    first: usize,
    out: &mut [f32],
) {
    let tokens = patches + 1;
    for (i, row) in (first..).zip(out.chunks_exact_mut(dim.max(1))) {
        let (b, t) = (i / tokens, i % tokens);
        let source = match t {
            0 => cls,
            _ => &embeddings[(b * patches + t - 1) * dim..],
        };
        for ((o, e), p) in row.iter_mut().zip(source).zip(&position[t * dim..]) {
            *o = e + p;
        }
    }
}

/// Copies row 0 (the CLS token) of each image: `[batch, tokens, dim]` → `[batch, dim]`.
pub fn select_cls(batch: usize, tokens: usize, dim: usize, x: &[f32], out: &mut [f32]) {
    for b in 0..batch {
        out[b * dim..][..dim].copy_from_slice(&x[b * tokens * dim..][..dim]);
    }
}
