//! The kernels' vocabulary for `f32` vectors: one trait, [`F32s`], implemented once per
//! instruction set, and the kernels written once over it.
//!
//! A kernel body is a generic `#[inline(always)] unsafe fn` over `V: F32s`; each
//! instruction set gets a thin `#[target_feature(enable = ...)]` entry point that calls it
//! with its own vector type, so the body is compiled inside the entry point with that
//! set's features and every method below inlines to its intrinsic (matrixmultiply's
//! generic kernels, candle's `Cpu` trait). Two sets give the same bits wherever the body
//! fixes the order of operations; what is left to each set is how a method maps onto its
//! instructions, the order of its horizontal reductions, and the edges of its `exp2`.
//!
//! Adding an instruction set: a vector type, an `impl F32s` (and `impl Transcendental`
//! where the activations are to run on it), and entry points beside the existing ones
//! in `activation`, `attention`, `gemm` and `norm`. The reduced-precision GEMMs add two
//! narrow traits, [`Bf16Dot`] and [`I8Dot`], for the sets with such dot products.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::Avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::Avx512;
#[cfg(target_arch = "aarch64")]
pub(crate) use neon::Neon;

/// One instruction set's `f32` vector of `LANES` lanes.
///
/// # Safety
/// Every method executes that set's instructions: the caller must have checked that the
/// CPU supports them (`Isa::is_supported`). The methods that take a pointer also need it
/// valid for what they read or write, as each says. Method names follow the intrinsics:
/// `a.max(b)` is `max(a, b)` with the operand order of the instruction, which decides
/// what a NaN lane gives on x86 (the second operand).
pub(crate) trait F32s: Copy {
    const LANES: usize;

    unsafe fn splat(x: f32) -> Self;
    unsafe fn zero() -> Self;
    /// `LANES` values from `p`, which need not be aligned.
    unsafe fn load(p: *const f32) -> Self;
    /// `LANES` bf16 values (their bits) from `p`, widened to `f32` exactly.
    unsafe fn load_bf16(p: *const u16) -> Self;
    /// The first `n` lanes (`n ≤ LANES`) from `p`, the others 0; reads only those `n`.
    unsafe fn load_tail(p: *const f32, n: usize) -> Self;
    /// As [`F32s::load_tail`], the other lanes taken from `fill`.
    unsafe fn load_tail_or(p: *const f32, n: usize, fill: Self) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// Stores the first `n` lanes (`n ≤ LANES`) at `p`, and writes nothing else.
    unsafe fn store_tail(self, p: *mut f32, n: usize);
    /// The first `n` lanes kept, the others 0.
    unsafe fn keep_first(self, n: usize) -> Self;

    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    /// `self · b + c`, rounded once.
    unsafe fn fma(self, b: Self, c: Self) -> Self;
    unsafe fn max(self, o: Self) -> Self;
    /// Each lane rounded to the nearest integer, ties to even.
    unsafe fn round(self) -> Self;

    /// The sum of the lanes, in this set's fixed order.
    unsafe fn reduce_sum(self) -> f32;
    /// The largest lane.
    unsafe fn reduce_max(self) -> f32;

    /// `2^t` for `t ≤ 0` and 0 for `t` below [`EXP2_MIN_ARG`](crate::expf::EXP2_MIN_ARG)
    /// (−∞ too); NaN stays NaN. The polynomial is [`exp2_fraction`](crate::expf::exp2_fraction)
    /// for all sets; how `2^n` is applied at the bottom of the range is each set's.
    unsafe fn exp2_nonpositive(t: Self) -> Self;

    /// Asks for the cache line at `p` in L1; `p` is never dereferenced and may point
    /// anywhere. A no-op where stable Rust has no prefetch.
    fn prefetch_l1(p: *const f32);
    /// As [`F32s::prefetch_l1`], into L2.
    fn prefetch_l2(p: *const f32);
}

/// bf16 dot products (`vdpbf16ps`): each `f32` lane sums the products of a pair of bf16
/// values from each operand.
///
/// # Safety
/// As [`F32s`].
pub(crate) trait Bf16Dot: F32s {
    /// `LANES` pairs of bf16 values.
    type Pairs: Copy;

    /// The pair at `p` (two bf16 values) in every lane.
    unsafe fn splat_pair(p: *const u16) -> Self::Pairs;
    /// `LANES` pairs from `p`: `2·LANES` bf16 values, lane `i` holding values `2i, 2i+1`.
    unsafe fn load_pairs(p: *const u16) -> Self::Pairs;
    /// `self + a₀·b₀ + a₁·b₁` in each lane, the products exact, the sum in `f32`.
    unsafe fn dot_pairs(self, a: Self::Pairs, b: Self::Pairs) -> Self;
}

/// Integer dot products of unsigned 8-bit A values and signed 8-bit B values into `i32`
/// lanes, `GROUP` products per lane per step, exact (no intermediate saturation).
///
/// # Safety
/// As [`F32s`].
pub(crate) trait I8Dot: F32s {
    /// `LANES` `i32` lanes (also the shape a broadcast A group and a B step take).
    type Ints: Copy;
    /// Consecutive depths one lane sums per step.
    const GROUP: usize;

    unsafe fn zero_ints() -> Self::Ints;
    /// The `GROUP` A values at `p`, in every lane.
    unsafe fn splat_group(p: *const u8) -> Self::Ints;
    /// `LANES` groups of `GROUP` B values from `p`, lane `i` holding values
    /// `GROUP·i .. GROUP·(i + 1)`.
    unsafe fn load_groups(p: *const i8) -> Self::Ints;
    /// `acc + Σ aᵢ·bᵢ` over each lane's group.
    unsafe fn dot_groups(acc: Self::Ints, a: Self::Ints, b: Self::Ints) -> Self::Ints;
    /// `acc − zero · sums` in each lane, in `i32` (`zero` is a scalar).
    unsafe fn sub_scaled(acc: Self::Ints, zero: i32, sums: *const i32) -> Self::Ints;
    /// Each lane converted to `f32`, rounded to nearest.
    unsafe fn ints_to_f32(n: Self::Ints) -> Self;
}

/// What the activations (and their exp, expm1 and erf) need beyond [`F32s`]: division,
/// comparisons and selects, and lanes of integers. Implemented where the activations are
/// vectorised (x86).
///
/// # Safety
/// As [`F32s`].
#[cfg(target_arch = "x86_64")]
pub(crate) trait Transcendental: F32s {
    /// What a lane-wise comparison gives, for [`Transcendental::select`].
    type Mask: Copy;
    /// `i32` lanes.
    type I32s: Copy;

    unsafe fn div(self, o: Self) -> Self;
    /// `c − self · b`, rounded once.
    unsafe fn fnma(self, b: Self, c: Self) -> Self;
    unsafe fn min(self, o: Self) -> Self;
    /// `|self|`.
    unsafe fn abs(self) -> Self;
    /// Lanes where `self < o` (ordered: false for NaN).
    unsafe fn lt(self, o: Self) -> Self::Mask;
    /// Lanes where `self > o` (ordered: false for NaN).
    unsafe fn gt(self, o: Self) -> Self::Mask;
    /// `if_true` in the lanes of `mask`, `if_false` in the others.
    unsafe fn select(mask: Self::Mask, if_true: Self, if_false: Self) -> Self;

    /// Each lane converted to `i32`, rounded to nearest (ties to even).
    unsafe fn to_i32(self) -> Self::I32s;
    unsafe fn from_i32(n: Self::I32s) -> Self;
    /// `2^n` from exponent bits, for `n ∈ [−126, 127]`.
    unsafe fn pow2(n: Self::I32s) -> Self;
    /// `self · 2^n` rounded once (to a subnormal or 0 below the exponent range, +∞
    /// above it), for integral `n ∈ [−150, 128]`.
    unsafe fn ldexp(self, n: Self) -> Self;
    /// `table[n]` in each lane, for `n ∈ 0..8`.
    unsafe fn lookup8(table: &[f32; 8], n: Self::I32s) -> Self;
}
