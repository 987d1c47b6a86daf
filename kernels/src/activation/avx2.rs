//! AVX2+FMA activations, eight lanes at a time.
//!
//! Every function here is an `unsafe fn` only because it needs AVX2 and FMA: the caller
//! must have checked that the CPU has them.

use std::arch::x86_64::*;
use std::f32::consts::SQRT_2;

use super::{HALF_ERF_PIECES, LAST_OFFSET};
use crate::expf::{self, avx2::exp};
use crate::{Activation, SELU_ALPHA, SELU_SCALE, SQRT_2_OVER_PI};

/// `act` on every element of `x` in place.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn apply_slice(act: Activation, x: &mut [f32]) {
    let mut lanes = x.chunks_exact_mut(8);
    for chunk in &mut lanes {
        let mut v = [_mm256_loadu_ps(chunk.as_ptr())];
        apply_all(act, &mut v);
        _mm256_storeu_ps(chunk.as_mut_ptr(), v[0]);
    }
    let tail = lanes.into_remainder();
    if !tail.is_empty() {
        let mut padded = [0.0f32; 8];
        padded[..tail.len()].copy_from_slice(tail);
        let mut v = [_mm256_loadu_ps(padded.as_ptr())];
        apply_all(act, &mut v);
        _mm256_storeu_ps(padded.as_mut_ptr(), v[0]);
        tail.copy_from_slice(&padded[..tail.len()]);
    }
}

/// `act` on every lane of every vector in `vs`, choosing the function once for all.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn apply_all(act: Activation, vs: &mut [__m256]) {
    // One loop per arm, so that each function inlines into its own loop.
    macro_rules! map {
        ($f:ident) => {
            vs.iter_mut().for_each(|v| *v = $f(*v))
        };
    }
    match act {
        Activation::Identity => {}
        Activation::Gelu => map!(gelu),
        Activation::GeluTanh => map!(gelu_tanh),
        Activation::GeluFast => map!(gelu_fast),
        Activation::QuickGelu => map!(quick_gelu),
        Activation::Relu => map!(relu),
        Activation::Relu6 => map!(relu6),
        Activation::Relu2 => map!(relu2),
        Activation::LeakyRelu => map!(leaky_relu),
        Activation::Selu => map!(selu),
        Activation::Silu => map!(silu),
        Activation::Mish => map!(mish),
        Activation::Tanh => map!(tanh),
        Activation::Sigmoid => map!(sigmoid),
    }
}

/// `x·Φ(x)`, as `x/2 + |x|·(Φ(|x|) − 1/2)`: `half_erf` gives the second factor, and the
/// sign needs no handling because `x·(Φ(x) − 1/2)` is even in x.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu(x: __m256) -> __m256 {
    let magnitude = _mm256_andnot_ps(splat(-0.0), x);
    _mm256_fmadd_ps(magnitude, half_erf(magnitude), _mm256_mul_ps(splat(0.5), x))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_tanh(x: __m256) -> __m256 {
    let half_x = _mm256_mul_ps(splat(0.5), x);
    let x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    let inner = _mm256_mul_ps(
        splat(SQRT_2_OVER_PI),
        _mm256_fmadd_ps(splat(0.044715), x3, x),
    );
    _mm256_fmadd_ps(half_x, tanh(inner), half_x)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_fast(x: __m256) -> __m256 {
    let half_x = _mm256_mul_ps(splat(0.5), x);
    let x2 = _mm256_mul_ps(x, x);
    let inner = _mm256_mul_ps(
        _mm256_mul_ps(x, splat(SQRT_2_OVER_PI)),
        _mm256_fmadd_ps(splat(0.044715), x2, splat(1.0)),
    );
    _mm256_fmadd_ps(half_x, tanh(inner), half_x)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn quick_gelu(x: __m256) -> __m256 {
    _mm256_mul_ps(x, sigmoid(_mm256_mul_ps(splat(1.702), x)))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn relu(x: __m256) -> __m256 {
    _mm256_max_ps(x, _mm256_setzero_ps())
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn relu6(x: __m256) -> __m256 {
    _mm256_min_ps(relu(x), splat(6.0))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn relu2(x: __m256) -> __m256 {
    let r = relu(x);
    _mm256_mul_ps(r, r)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn leaky_relu(x: __m256) -> __m256 {
    let negative = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_setzero_ps());
    _mm256_blendv_ps(x, _mm256_mul_ps(splat(0.01), x), negative)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn selu(x: __m256) -> __m256 {
    let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_setzero_ps());
    let negative_branch = _mm256_mul_ps(splat(SELU_SCALE * SELU_ALPHA), expm1(x));
    _mm256_blendv_ps(
        negative_branch,
        _mm256_mul_ps(splat(SELU_SCALE), x),
        positive,
    )
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu(x: __m256) -> __m256 {
    _mm256_mul_ps(x, sigmoid(x))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn mish(x: __m256) -> __m256 {
    _mm256_mul_ps(x, tanh_softplus(x))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn splat(v: f32) -> __m256 {
    _mm256_set1_ps(v)
}

/// `p(x)` for coefficients listed from the highest power down, by Horner's rule.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn polynomial(x: __m256, coefficients: &[f32]) -> __m256 {
    let mut acc = splat(coefficients[0]);
    for &c in &coefficients[1..] {
        acc = _mm256_fmadd_ps(acc, x, splat(c));
    }
    acc
}

/// `2^n` for integer lanes `n` in `-126..=127`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn pow2(n: __m256i) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
        n,
        _mm256_set1_epi32(127),
    )))
}

const LOG2_E: f32 = std::f32::consts::LOG2_E;

/// Splits `x` into `n · ln 2 + r` with integer `n` and `|r| ≤ ln 2 / 2`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn reduce_ln2(x: __m256) -> (__m256, __m256) {
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        splat(LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, splat(expf::LN2_HI), x);
    (n, _mm256_fnmadd_ps(n, splat(expf::LN2_LO), r))
}

/// `e^x − 1`, accurate relative to the result near 0 too (where `exp(x) − 1` cancels);
/// −1 below −88, `x` clamped to 88 above.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn expm1(x: __m256) -> __m256 {
    let x = _mm256_max_ps(splat(-88.0), _mm256_min_ps(splat(88.0), x));
    let (n, r) = reduce_ln2(x);
    // Taylor series of e^r − 1 to r⁷: the next term is below 2e-8 relative for |r| ≤ ln 2 / 2.
    let p = polynomial(
        r,
        &[
            1.0 / 5040.0,
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
        ],
    );
    let em1_r = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    // e^x − 1 = 2^n·(e^r − 1) + (2^n − 1), exact in the last term for the n that occur.
    let scale = pow2(_mm256_cvtps_epi32(n));
    _mm256_fmadd_ps(scale, em1_r, _mm256_sub_ps(scale, splat(1.0)))
}

/// `tanh x = (e^{2x} − 1) / (e^{2x} + 1)`, through `expm1` so small `x` keeps its precision.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tanh(x: __m256) -> __m256 {
    // tanh is ±1 in f32 beyond |x| = 10, and e^{2x} must not overflow.
    let x = _mm256_max_ps(splat(-10.0), _mm256_min_ps(splat(10.0), x));
    let em1 = expm1(_mm256_add_ps(x, x));
    _mm256_div_ps(em1, _mm256_add_ps(em1, splat(2.0)))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn sigmoid(x: __m256) -> __m256 {
    let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), x));
    _mm256_div_ps(splat(1.0), _mm256_add_ps(splat(1.0), e))
}

/// `tanh(softplus(x))` without a logarithm: with `u = e^x`, `tanh(ln(1 + u))` is
/// `u(u + 2) / (u(u + 2) + 2)`. Past x = 20, where PyTorch's softplus returns x, it is 1.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tanh_softplus(x: __m256) -> __m256 {
    let u = exp(_mm256_min_ps(x, splat(20.0)));
    let num = _mm256_mul_ps(u, _mm256_add_ps(u, splat(2.0)));
    let t = _mm256_div_ps(num, _mm256_add_ps(num, splat(2.0)));
    _mm256_blendv_ps(t, splat(1.0), _mm256_cmp_ps::<_CMP_GT_OQ>(x, splat(20.0)))
}

/// `erf(x/√2)/2` for `x ≥ 0`, from `HALF_ERF_PIECES`; see there for the pieces.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn half_erf(magnitude: __m256) -> __m256 {
    let offset = _mm256_min_ps(
        _mm256_fmadd_ps(magnitude, splat(SQRT_2), splat(-0.5)),
        splat(LAST_OFFSET),
    );
    let piece = _mm256_cvtps_epi32(offset);
    let t = _mm256_sub_ps(offset, _mm256_cvtepi32_ps(piece));
    let coefficient =
        |row: &[f32; 8]| _mm256_permutevar8x32_ps(_mm256_loadu_ps(row.as_ptr()), piece);
    let mut acc = coefficient(&HALF_ERF_PIECES[0]);
    for row in &HALF_ERF_PIECES[1..] {
        acc = _mm256_fmadd_ps(acc, t, coefficient(row));
    }
    acc
}
