//! Packed, cache-blocked GEMM: `c[m×n] = epilogue(a[m×k] · wᵀ)` with `w` stored `[n×k]`,
//! the semantics of `scalar::gemm`, BLIS-style, with the weights in `f32`, bf16 or int8.
//!
//! The weights are packed once, at model load, into [`PackedWeights`]: K blocks of
//! `KC` depth, each cut into panels of `NR` columns stored depth-major, zero-padded. Each
//! call reads `a` in place (f32), or converts it once per call to what the kernel
//! multiplies (bf16 values, or 8-bit integers with a scale per row, see `quant`); only a
//! row panel past C's last row is copied, padded to `MR` rows, into a per-thread buffer
//! that grows once and is then reused, so a warm call allocates nothing. `loops` holds the
//! loop nest and the packing; each instruction set supplies small micro-kernels behind
//! [`GemmKernel`] that multiply an `MR×depth` panel of A by a `depth×NR` panel of B and
//! finish the tile: after the last K block they apply `act(c + bias) + residual` to the
//! tile just summed (in registers on x86), so the epilogue costs no pass over C. The
//! SIMD micro-kernels are generic bodies (`tile`) in each set's tile shape.
//!
//! Threads split C into blocks of rows (and of columns when there are too few rows);
//! K is never split, so each element is summed in the same order whatever the thread
//! count and the results are bitwise identical.

use std::cell::RefCell;

use crate::aligned::AlignedVec;
use crate::quant::{quantize_row, RowQuant};
use crate::simd::F32s;
use crate::threads::{DisjointMut, ThreadPool};
use crate::{bf16, Activation, Epilogue, Isa};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod loops;
#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;
mod tile;

/// A register-tiled micro-kernel and the block sizes its loop nest uses.
///
/// The block sizes follow BLIS's reasoning, sized for Zen 3 (32 KiB L1d, 512 KiB L2 per
/// core, 32 MiB L3 shared):
/// - `MR×NR`: the C tile held in registers for a whole K block.
/// - `KC`: the depth of a K block. One `KC×NR` panel of B is reused against every A panel
///   of the block, so it should sit in L1 beside an `MR×KC` A panel and the C tile.
/// - `MC`: about the most rows of A one task takes. Its `MC×KC` block of A is swept once
///   per B panel, so it should stay in L2.
/// - `NC`: the most columns one task sweeps. B comes from L3 or memory once per task, so
///   wider is better until a block of B no longer fits in L3.
pub(crate) trait GemmKernel {
    /// What the kernel reads of A: `f32`, bf16 bits, or quantized `u8`.
    type A: AValue;
    /// What packed B holds.
    type B: PackedValue;
    /// Consecutive depths a lane of a packed B step holds (1, or 2 for bf16 pairs, 2 or
    /// 4 for 8-bit groups): packed B's depth, and each K block's, is a multiple of it.
    const GROUP: usize = 1;
    const MR: usize;
    const NR: usize;
    const KC: usize;
    const MC: usize;
    const NC: usize;

    /// Multiplies the `MR×depth` A panel by the packed `depth×NR` B panel and stores the
    /// first `rows` rows of the `MR×NR` tile at `c` (row stride `ldc`): `c = c + a·b` when
    /// `accumulate`, else `c = a·b`; then, when `epilogue` is given,
    /// `c = act(c + bias) + residual`. The tile's other rows are computed and dropped, so
    /// C's last row panel needs no staging. An 8-bit kernel dequantizes `a·b` with
    /// `panels.dequant` first.
    ///
    /// # Safety
    /// The CPU must support the kernel's instruction set, and `rows` must be at most `MR`.
    /// `panels.a` must be valid for reads of `MR` rows of `depth` values `panels.a_stride`
    /// apart, and `panels.b` for `NR·depth` (`depth / GROUP` steps of `NR·GROUP` values,
    /// step after step); for an 8-bit kernel `panels.dequant` must point at `MR` row and
    /// `NR` column entries. `c` must be valid for reads and writes of `rows` rows of `NR`
    /// values `ldc` apart, with no other thread touching them. The epilogue's `bias` must
    /// be valid for `NR` reads and its `residual` for `rows` rows of `NR` values `ldc`
    /// apart.
    unsafe fn kernel(
        panels: Panels<Self::A, Self::B>,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        accumulate: bool,
        epilogue: Option<&TileEpilogue>,
    );
}

/// The operands of one micro-kernel call.
pub(crate) struct Panels<A, B> {
    pub depth: usize,
    /// `MR` rows of A, `a_stride` apart: read in place from A, or from a padded copy.
    pub a: *const A,
    pub a_stride: usize,
    /// Packed B.
    pub b: *const B,
    /// A hint, never dereferenced: the kernel may ask the cache for up to `depth·16`
    /// bytes from here, memory a later call reads; null when there is nothing to fetch.
    /// A forward meets each layer's weights once, from memory; fetched a call ahead,
    /// they arrive in time.
    pub prefetch: *const u8,
    /// The scales of an 8-bit product; dangling for the float kernels.
    pub dequant: Dequant,
}

impl<A, B> Clone for Panels<A, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, B> Copy for Panels<A, B> {}

/// What turns an 8-bit tile's `i32` sums into `f32`: for row `r` and column `j`,
/// `a[r].scale · b_scale[j] · (sum − a[r].zero · b_sum[j])`.
#[derive(Clone, Copy)]
pub(crate) struct Dequant {
    /// The tile's first row's quantization.
    pub a: *const RowQuant,
    /// The tile's first column's weight scale.
    pub b_scale: *const f32,
    /// The tile's first column's sum of quantized weights over this K block.
    pub b_sum: *const i32,
}

impl Dequant {
    const NONE: Dequant = Dequant {
        a: std::ptr::null(),
        b_scale: std::ptr::null(),
        b_sum: std::ptr::null(),
    };
}

/// The epilogue of one `MR×NR` tile, as pointers to the tile's corner in each operand.
pub(crate) struct TileEpilogue {
    pub bias: Option<*const f32>,
    pub activation: Activation,
    /// Row stride `ldc`, the same as C's.
    pub residual: Option<*const f32>,
}

/// A value packed B holds, and where [`PackedWeights`] keeps its panels.
pub(crate) trait PackedValue: Copy + Default + Send + Sync + 'static {
    /// The packed panels of `w`, which must hold this type.
    fn panels(w: &PackedWeights) -> &[Self];
}

/// A packed B value that float kernels widen to `f32` as they load it.
pub(crate) trait FloatValue: PackedValue {
    /// The kernel family a kernel on these weights records (see `dispatch`).
    const FAMILY: crate::dispatch::Kernel;
    /// `V::LANES` values from `p`, as `f32`.
    ///
    /// # Safety
    /// As [`F32s::load`].
    unsafe fn load<V: F32s>(p: *const Self) -> V;
    fn to_f32(self) -> f32;
}

impl PackedValue for f32 {
    fn panels(w: &PackedWeights) -> &[f32] {
        match &w.storage {
            Storage::F32(panels) => panels,
            _ => unreachable!("weights packed as {:?}, not f32", w.format()),
        }
    }
}

impl FloatValue for f32 {
    const FAMILY: crate::dispatch::Kernel = crate::dispatch::Kernel::Gemm;
    #[inline(always)]
    unsafe fn load<V: F32s>(p: *const f32) -> V {
        // SAFETY: the caller's.
        unsafe { V::load(p) }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

/// bf16 bits.
impl PackedValue for u16 {
    fn panels(w: &PackedWeights) -> &[u16] {
        match &w.storage {
            Storage::Bf16(panels) => panels,
            _ => unreachable!("weights packed as {:?}, not bf16", w.format()),
        }
    }
}

impl FloatValue for u16 {
    const FAMILY: crate::dispatch::Kernel = crate::dispatch::Kernel::GemmBf16;
    #[inline(always)]
    unsafe fn load<V: F32s>(p: *const u16) -> V {
        // SAFETY: the caller's.
        unsafe { V::load_bf16(p) }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

impl PackedValue for i8 {
    fn panels(w: &PackedWeights) -> &[i8] {
        match &w.storage {
            Storage::Int8 { panels, .. } => panels,
            _ => unreachable!("weights packed as {:?}, not int8", w.format()),
        }
    }
}

/// How a weight matrix is stored, and so what its GEMM multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    /// `f32`, as the checkpoint holds it.
    F32,
    /// bf16; activations are rounded to bf16 where they enter the product, which is
    /// summed in `f32`.
    Bf16,
    /// int8, symmetric per output channel; activations are quantized per row to 8 bits
    /// where they enter the product, which is summed in `i32`.
    Int8,
}

/// The micro-kernel a [`PackedWeights`] was packed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Micro {
    /// An `f32` kernel (`Isa::Scalar`: the portable one).
    F32(Isa),
    /// bf16 weights widened to `f32` as they load, on an `f32` kernel.
    Bf16Widening(Isa),
    /// `vdpbf16ps` (AVX512_BF16).
    Bf16Dot,
    /// `vpdpbusd` (AVX512_VNNI).
    Int8Vnni,
    /// AVX2's `vpmaddwd` on widened values.
    Int8Avx2,
    /// Plain Rust.
    Int8Portable,
}

impl Micro {
    /// The best kernel for `format` on `isa`, which the CPU must run.
    fn best(format: WeightFormat, isa: Isa) -> Micro {
        match (format, isa) {
            (WeightFormat::F32, _) => Micro::F32(isa),
            (WeightFormat::Bf16, Isa::Avx512) if has_bf16_dot() => Micro::Bf16Dot,
            (WeightFormat::Bf16, _) => Micro::Bf16Widening(isa),
            (WeightFormat::Int8, Isa::Avx512) if has_vnni() => Micro::Int8Vnni,
            (WeightFormat::Int8, Isa::Avx512 | Isa::Avx2Fma) => Micro::Int8Avx2,
            (WeightFormat::Int8, _) => Micro::Int8Portable,
        }
    }

    fn format(self) -> WeightFormat {
        match self {
            Micro::F32(_) => WeightFormat::F32,
            Micro::Bf16Widening(_) | Micro::Bf16Dot => WeightFormat::Bf16,
            Micro::Int8Vnni | Micro::Int8Avx2 | Micro::Int8Portable => WeightFormat::Int8,
        }
    }

    /// Its name in reports, such as `avx512-bf16-dot`.
    fn name(self) -> String {
        match self {
            Micro::F32(isa) => format!("{}-f32", isa.name()),
            Micro::Bf16Widening(isa) => format!("{}-bf16-widened", isa.name()),
            Micro::Bf16Dot => "avx512-bf16-dot".into(),
            Micro::Int8Vnni => "avx512-vnni-int8".into(),
            Micro::Int8Avx2 => "avx2-int8".into(),
            Micro::Int8Portable => "scalar-int8".into(),
        }
    }

    /// Every kernel for `format` this CPU runs, best first.
    #[cfg(test)]
    fn all_here(format: WeightFormat) -> Vec<Micro> {
        let mut all: Vec<Micro> = crate::tested_isas()
            .into_iter()
            .map(|isa| Micro::best(format, isa))
            .collect();
        // The lower kernels an AVX-512 CPU with the dot products skips.
        if crate::runs_here(Isa::Avx512) {
            all.push(Micro::Bf16Widening(Isa::Avx512));
        }
        all.retain(|m| m.format() == format);
        all.dedup();
        all
    }
}

/// Whether this CPU has AVX512_BF16 (and AVX-512 is allowed, see `Isa::is_supported`).
pub fn has_bf16_dot() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Isa::Avx512.is_supported() && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU has AVX512_VNNI (and AVX-512 is allowed, see `Isa::is_supported`).
pub fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Isa::Avx512.is_supported()
            && std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Packed panels in the weights' format; the int8 ones with what dequantizes them.
enum Storage {
    F32(AlignedVec<f32>),
    Bf16(AlignedVec<u16>),
    Int8 {
        panels: AlignedVec<i8>,
        /// One per column, zero past `n` to the last panel's end.
        scales: Vec<f32>,
        /// Per K block, one sum of quantized weights per column, padded as `scales`.
        sums: Vec<i32>,
    },
}

/// A weight matrix `w[n×k]` packed for one GEMM micro-kernel.
pub struct PackedWeights {
    micro: Micro,
    n: usize,
    k: usize,
    /// `k` rounded up to the kernel's `GROUP`: the depth of packed B and of A's copies.
    depth: usize,
    /// Depth of every K block but the last, which may be shallower.
    block_depth: usize,
    storage: Storage,
}

/// The f32 kernel of `isa` (the portable one where this architecture has none).
macro_rules! with_f32_kernel {
    ($isa:expr, $kernel:ident, $value:ty, $body:expr) => {
        match $isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => {
                type $kernel = avx2::Avx2Fma<$value>;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                type $kernel = avx512::Avx512<$value>;
                $body
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                type $kernel = neon::Neon<$value>;
                $body
            }
            _ => {
                type $kernel = portable::Portable<$value>;
                $body
            }
        }
    };
}

/// Runs `$body` (or the body for the weights' format) with `$kernel` the micro-kernel
/// type of `$micro`.
macro_rules! with_kernel {
    ($micro:expr, $kernel:ident, $body:expr) => {
        with_kernel!($micro, $kernel, f32: $body, bf16: $body, int8: $body)
    };
    ($micro:expr, $kernel:ident, f32: $f32_body:expr, bf16: $bf16_body:expr, int8: $int8_body:expr) => {
        match $micro {
            Micro::F32(isa) => with_f32_kernel!(isa, $kernel, f32, $f32_body),
            Micro::Bf16Widening(isa) => with_f32_kernel!(isa, $kernel, u16, $bf16_body),
            #[cfg(target_arch = "x86_64")]
            Micro::Bf16Dot => {
                type $kernel = avx512::Avx512Bf16;
                $bf16_body
            }
            #[cfg(target_arch = "x86_64")]
            Micro::Int8Vnni => {
                type $kernel = avx512::Avx512Vnni;
                $int8_body
            }
            #[cfg(target_arch = "x86_64")]
            Micro::Int8Avx2 => {
                type $kernel = avx2::Avx2Int8;
                $int8_body
            }
            #[allow(unreachable_patterns)]
            Micro::Int8Portable | _ => {
                type $kernel = portable::PortableInt8;
                $int8_body
            }
        }
    };
}

impl PackedWeights {
    /// Packs `w`, stored `[n×k]` row-major (PyTorch's `nn.Linear` layout), for `isa`'s
    /// f32 kernel.
    ///
    /// Panics if `w` is shorter than `n·k`, or if this CPU lacks `isa`. An instruction set
    /// with no kernel on this architecture gets the portable one.
    pub fn new(isa: Isa, n: usize, k: usize, w: &[f32]) -> Self {
        Self::pack(
            Micro::best(WeightFormat::F32, check(isa)),
            n,
            k,
            Source::F32(w),
        )
    }

    /// Packs bf16 weights (their bits, `[n×k]` row-major) for the best bf16 kernel of
    /// `isa`: `vdpbf16ps` where the CPU has AVX512_BF16, else `isa`'s f32 kernel reading
    /// the bf16 values widened. Panics as [`PackedWeights::new`].
    pub fn from_bf16(isa: Isa, n: usize, k: usize, w: &[u16]) -> Self {
        Self::pack(
            Micro::best(WeightFormat::Bf16, check(isa)),
            n,
            k,
            Source::Bf16(w),
        )
    }

    /// Packs int8 weights (`[n×k]` row-major, `w[j][p] ≈ scales[j] · values[j][p]`, as
    /// [`quant::quantize_weights`](crate::quant::quantize_weights) makes them) for the
    /// best int8 kernel of `isa`. Values must lie in `[−127, 127]`. Panics as
    /// [`PackedWeights::new`], or if `scales` is shorter than `n`.
    pub fn from_int8(isa: Isa, n: usize, k: usize, values: &[i8], scales: &[f32]) -> Self {
        Self::pack(
            Micro::best(WeightFormat::Int8, check(isa)),
            n,
            k,
            Source::Int8 { values, scales },
        )
    }

    fn pack(micro: Micro, n: usize, k: usize, source: Source) -> Self {
        assert!(
            source.len() >= n * k,
            "weights hold {} values, not {n}×{k}",
            source.len()
        );
        with_kernel!(micro, K,
            f32: {
                let Source::F32(w) = source else { unreachable!() };
                let (packed, layout) = loops::pack_weights::<K>(n, k, w);
                Self::packed(micro, layout, Storage::F32(packed))
            },
            bf16: {
                let Source::Bf16(w) = source else { unreachable!() };
                let (packed, layout) = loops::pack_weights::<K>(n, k, w);
                Self::packed(micro, layout, Storage::Bf16(packed))
            },
            int8: {
                let Source::Int8 { values, scales } = source else { unreachable!() };
                assert!(scales.len() >= n, "{} scales for {n} columns", scales.len());
                let (panels, layout) = loops::pack_weights::<K>(n, k, values);
                let n_padded = n.div_ceil(K::NR) * K::NR;
                let mut padded_scales = vec![0.0; n_padded];
                padded_scales[..n].copy_from_slice(&scales[..n]);
                let sums = loops::block_sums::<K>(n, k, values, &layout);
                let storage = Storage::Int8 { panels, scales: padded_scales, sums };
                Self::packed(micro, layout, storage)
            }
        )
    }

    fn packed(micro: Micro, layout: loops::Layout, storage: Storage) -> Self {
        Self {
            micro,
            n: layout.n,
            k: layout.k,
            depth: layout.depth,
            block_depth: layout.block_depth,
            storage,
        }
    }

    /// The instruction set whose kernel these weights are packed for.
    pub fn isa(&self) -> Isa {
        match self.micro {
            Micro::F32(isa) | Micro::Bf16Widening(isa) => isa,
            Micro::Bf16Dot | Micro::Int8Vnni => Isa::Avx512,
            Micro::Int8Avx2 => Isa::Avx2Fma,
            Micro::Int8Portable => Isa::Scalar,
        }
    }

    /// How the weights are stored.
    pub fn format(&self) -> WeightFormat {
        self.micro.format()
    }

    /// The micro-kernel the weights are packed for, as reports name it
    /// (`avx512-bf16-dot`, `avx2-int8`, `avx512-f32`, ...).
    pub fn kernel_name(&self) -> String {
        self.micro.name()
    }

    /// Bytes the packed weights take.
    pub fn bytes(&self) -> usize {
        match &self.storage {
            Storage::F32(p) => p.len() * 4,
            Storage::Bf16(p) => p.len() * 2,
            Storage::Int8 {
                panels,
                scales,
                sums,
            } => panels.len() + scales.len() * 4 + sums.len() * 4,
        }
    }

    /// Output features: the `n` of `w[n×k]`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features: the `k` of `w[n×k]`.
    pub fn k(&self) -> usize {
        self.k
    }
}

/// `isa`, checked to run on this CPU.
fn check(isa: Isa) -> Isa {
    assert!(isa.is_supported(), "this CPU lacks {isa:?}");
    isa
}

/// Weights as given to [`PackedWeights`].
enum Source<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
    Int8 { values: &'a [i8], scales: &'a [f32] },
}

impl Source<'_> {
    fn len(&self) -> usize {
        match self {
            Source::F32(w) => w.len(),
            Source::Bf16(w) => w.len(),
            Source::Int8 { values, .. } => values.len(),
        }
    }
}

/// A's rows as a kernel reads them.
pub(crate) trait AValue: Copy + Default + Send + Sync + 'static {
    /// Calls `f` with `a[m×k]` converted for a kernel reading `Self` on weights of
    /// `format` (`Self` as row-major rows of `depth` values, the stride, and for 8-bit A
    /// the quantization of each row, with `extra_rows` more rows of zeros). The rows are
    /// converted on `pool`'s threads.
    #[allow(clippy::too_many_arguments)]
    fn with_converted<R>(
        format: WeightFormat,
        a: &[f32],
        m: usize,
        k: usize,
        depth: usize,
        extra_rows: usize,
        pool: &ThreadPool,
        f: impl FnOnce(&[Self], usize, &[RowQuant]) -> R,
    ) -> R;

    /// Calls `f` with this thread's buffer for A's partial last row panel, at least `len`
    /// long: it grows to the largest panel it has held, then is reused.
    fn with_edge_panel<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

/// Implements `AValue::with_edge_panel` on a thread-local buffer of its own.
macro_rules! edge_panel {
    ($value:ty) => {
        fn with_edge_panel<R>(len: usize, f: impl FnOnce(&mut [$value]) -> R) -> R {
            thread_local! {
                static PANEL: RefCell<AlignedVec<$value>> = RefCell::default();
            }
            PANEL.with_borrow_mut(|panel| {
                panel.reserve_len(len);
                f(panel)
            })
        }
    };
}

thread_local! {
    /// The calling thread's converted A, by type: grows to the largest it has held, then is
    /// reused.
    static ROUNDED_A: RefCell<AlignedVec<f32>> = RefCell::new(AlignedVec::default());
    static BF16_A: RefCell<AlignedVec<u16>> = RefCell::new(AlignedVec::default());
    static QUANTIZED_A: RefCell<(AlignedVec<u8>, Vec<RowQuant>)> = RefCell::default();
}

/// The rows of `a[m×k]`.
fn rows_of(a: &[f32], m: usize, k: usize) -> impl Iterator<Item = &[f32]> {
    a[..m * k].chunks_exact(k.max(1)).take(m)
}

impl AValue for f32 {
    edge_panel!(f32);

    /// Read in place, or (bf16 weights on a widening kernel) rounded to bf16.
    fn with_converted<R>(
        format: WeightFormat,
        a: &[f32],
        m: usize,
        k: usize,
        _: usize,
        _: usize,
        pool: &ThreadPool,
        f: impl FnOnce(&[f32], usize, &[RowQuant]) -> R,
    ) -> R {
        if format == WeightFormat::F32 {
            return f(a, k, &[]);
        }
        ROUNDED_A.with_borrow_mut(|rounded| {
            rounded.reserve_len(m * k);
            pool.split_rows(&mut rounded[..m * k], k, &|first, block| {
                for (r, &x) in block.iter_mut().zip(&a[first * k..]) {
                    *r = bf16::round(x);
                }
            });
            f(rounded, k, &[])
        })
    }
}

/// bf16 bits, each row padded with zeros to the kernel's pairs.
impl AValue for u16 {
    edge_panel!(u16);

    fn with_converted<R>(
        _: WeightFormat,
        a: &[f32],
        m: usize,
        k: usize,
        depth: usize,
        _: usize,
        pool: &ThreadPool,
        f: impl FnOnce(&[u16], usize, &[RowQuant]) -> R,
    ) -> R {
        BF16_A.with_borrow_mut(|pairs| {
            pairs.reserve_len(m * depth);
            pool.split_rows(&mut pairs[..m * depth], depth, &|first, block| {
                let rows = rows_of(&a[first * k..], block.len() / depth, k);
                for (row, out) in rows.zip(block.chunks_exact_mut(depth)) {
                    for (o, &x) in out.iter_mut().zip(row) {
                        *o = bf16::from_f32(x);
                    }
                    out[k..].fill(0);
                }
            });
            f(pairs, depth, &[])
        })
    }
}

/// Quantized per row (`quant::quantize_row`), each row padded with zeros to the
/// kernel's groups.
impl AValue for u8 {
    edge_panel!(u8);

    fn with_converted<R>(
        _: WeightFormat,
        a: &[f32],
        m: usize,
        k: usize,
        depth: usize,
        extra_rows: usize,
        pool: &ThreadPool,
        f: impl FnOnce(&[u8], usize, &[RowQuant]) -> R,
    ) -> R {
        QUANTIZED_A.with_borrow_mut(|(quantized, params)| {
            quantized.reserve_len(m * depth);
            params.clear();
            params.resize(m + extra_rows, RowQuant::default());
            let row_params = DisjointMut::new(&mut params[..m]);
            pool.split_rows(&mut quantized[..m * depth], depth, &|first, block| {
                let count = block.len() / depth;
                // SAFETY: split_rows hands each task its own rows, and so its own params.
                let block_params = unsafe { row_params.piece(first, count) };
                let rows = rows_of(&a[first * k..], count, k);
                for ((row, out), param) in rows.zip(block.chunks_exact_mut(depth)).zip(block_params)
                {
                    *param = quantize_row(row, out);
                    out[k..].fill(0);
                }
            });
            f(quantized, depth, params)
        })
    }
}

/// `c[m×n] = epilogue(a[m×k] · wᵀ)` with the kernel `w` was packed for, on `pool`.
///
/// `a` is row-major with row stride `k`; `c` and the residual are row-major `m×n`, the
/// bias holds `n` values. Panics if a slice is too short. For bf16 weights each value of
/// `a` is rounded to bf16 first; for int8 weights each row of `a` is quantized to 8 bits
/// (`quant::quantize_row`).
pub fn gemm_packed(
    m: usize,
    a: &[f32],
    w: &PackedWeights,
    c: &mut [f32],
    epilogue: &Epilogue,
    pool: &ThreadPool,
) {
    fn run<K: GemmKernel>(
        m: usize,
        a: &[f32],
        w: &PackedWeights,
        c: &mut [f32],
        epilogue: &Epilogue,
        pool: &ThreadPool,
    ) {
        let (format, k) = (w.format(), w.k);
        assert!(a.len() >= m * k, "a holds {} values, not {m}×{k}", a.len());
        K::A::with_converted(format, a, m, k, w.depth, K::MR, pool, |a, stride, rows| {
            loops::gemm::<K>(m, a, stride, rows, w, c, epilogue, pool)
        })
    }
    with_kernel!(w.micro, K, run::<K>(m, a, w, c, epilogue, pool))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scalar;
    use proptest::prelude::*;

    /// Every instruction set this CPU runs, down to the portable fallback.
    fn isas() -> Vec<Isa> {
        crate::tested_isas()
    }

    /// Deterministic pseudo-random values in `[-1, 1)`.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        crate::rng::Rng::values(seed, len, 1.0)
    }

    struct Case {
        m: usize,
        n: usize,
        k: usize,
        a: Vec<f32>,
        w: Vec<f32>,
        bias: Option<Vec<f32>>,
        residual: Option<Vec<f32>>,
        activation: Activation,
    }

    impl Case {
        fn new(
            m: usize,
            n: usize,
            k: usize,
            seed: u64,
            bias: bool,
            residual: bool,
            activation: Activation,
        ) -> Self {
            // Scaled so that the products, and so the activations' inputs, span a few units.
            let scale = 3.0 / (k.max(1) as f32).sqrt();
            Self {
                m,
                n,
                k,
                a: values(m * k, seed),
                w: values(n * k, seed + 1).iter().map(|v| v * scale).collect(),
                bias: bias.then(|| values(n, seed + 2)),
                residual: residual.then(|| values(m * n, seed + 3)),
                activation,
            }
        }

        fn epilogue(&self) -> Epilogue<'_> {
            Epilogue {
                bias: self.bias.as_deref(),
                activation: self.activation,
                residual: self.residual.as_deref(),
            }
        }

        fn run(&self, isa: Isa, threads: usize) -> Vec<f32> {
            self.run_on(Micro::best(WeightFormat::F32, isa), threads)
        }

        /// The weights in `micro`'s format: `w` itself, rounded to bf16, or quantized.
        fn packed(&self, micro: Micro) -> PackedWeights {
            let (n, k) = (self.n, self.k);
            let source_bf16;
            let quantized;
            let source = match micro.format() {
                WeightFormat::F32 => Source::F32(&self.w),
                WeightFormat::Bf16 => {
                    source_bf16 = crate::bf16::from_f32_slice(&self.w);
                    Source::Bf16(&source_bf16)
                }
                WeightFormat::Int8 => {
                    quantized = crate::quant::quantize_weights(n, k, &self.w);
                    Source::Int8 {
                        values: &quantized.0,
                        scales: &quantized.1,
                    }
                }
            };
            PackedWeights::pack(micro, n, k, source)
        }

        fn run_on(&self, micro: Micro, threads: usize) -> Vec<f32> {
            let packed = self.packed(micro);
            let mut c = vec![f32::NAN; self.m * self.n];
            gemm_packed(
                self.m,
                &self.a,
                &packed,
                &mut c,
                &self.epilogue(),
                &ThreadPool::new(threads),
            );
            c
        }

        /// Checks `c` against `scalar::gemm` within a bound on f32 summation error that
        /// grows with K, widened by how steep the activation is at the value.
        fn check(&self, c: &[f32]) -> Result<(), TestCaseError> {
            self.check_format(WeightFormat::F32, c)
        }

        /// [`Case::check`] against the reference for weights in `format`
        /// (`scalar::gemm`, `gemm_bf16` or `gemm_int8`): both sides round and quantize
        /// the same way, so only the order of the f32 sums differs.
        fn check_format(&self, format: WeightFormat, c: &[f32]) -> Result<(), TestCaseError> {
            let (m, n, k) = (self.m, self.n, self.k);
            let mut expected = vec![0.0; m * n];
            let epilogue = self.epilogue();
            match format {
                WeightFormat::F32 => {
                    scalar::gemm(m, n, k, &self.a, &self.w, &mut expected, &epilogue)
                }
                WeightFormat::Bf16 => {
                    let w = crate::bf16::from_f32_slice(&self.w);
                    scalar::gemm_bf16(m, n, k, &self.a, &w, &mut expected, &epilogue)
                }
                WeightFormat::Int8 => {
                    let (values, scales) = crate::quant::quantize_weights(n, k, &self.w);
                    scalar::gemm_int8(m, n, k, &self.a, &values, &scales, &mut expected, &epilogue)
                }
            }
            let max_a = self.a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let max_w = self.w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let sum_error = 1e-6 * self.k as f32 * max_a * max_w + 1e-6;
            for (i, (&got, &want)) in c.iter().zip(&expected).enumerate() {
                let tolerance = sum_error * (2.0 + 2.0 * want.abs()) + 1e-6 * want.abs();
                prop_assert!(
                    (got - want).abs() <= tolerance,
                    "{format:?} {}×{}×{} {:?} at ({}, {}): got {got}, want {want}",
                    self.m,
                    self.n,
                    self.k,
                    self.activation,
                    i / self.n,
                    i % self.n
                );
            }
            Ok(())
        }
    }

    fn activation() -> impl Strategy<Value = Activation> {
        (0..Activation::ALL.len()).prop_map(|i| Activation::ALL[i])
    }

    /// `MR, NR, KC, MC, NC` of every micro-kernel compiled here, whether or not this CPU
    /// runs it: each set's block edges are tested on every set that runs.
    fn block_sizes() -> Vec<[usize; 5]> {
        fn of<K: GemmKernel>() -> [usize; 5] {
            [K::MR, K::NR, K::KC, K::MC, K::NC]
        }
        vec![
            of::<portable::Portable>(),
            of::<portable::PortableInt8>(),
            #[cfg(target_arch = "x86_64")]
            of::<avx2::Avx2Fma>(),
            #[cfg(target_arch = "x86_64")]
            of::<avx2::Avx2Int8>(),
            #[cfg(target_arch = "x86_64")]
            of::<avx512::Avx512>(),
            #[cfg(target_arch = "x86_64")]
            of::<avx512::Avx512Bf16>(),
            #[cfg(target_arch = "x86_64")]
            of::<avx512::Avx512Vnni>(),
            #[cfg(target_arch = "aarch64")]
            of::<neon::Neon>(),
        ]
    }

    /// One below, at and one above a block, and two blocks and a tail.
    fn edges(block: usize) -> [usize; 4] {
        [block - 1, block, block + 1, 2 * block + 3]
    }

    /// The edges of the blocks in dimension `dim` (0: rows by MR and MC, 1: columns by NR
    /// and NC, 2: depth by KC) of every kernel.
    fn boundaries(dim: usize) -> Vec<usize> {
        let blocks = block_sizes();
        let mut sizes: Vec<usize> = match dim {
            0 => blocks.iter().flat_map(|b| [b[0], b[3]]).collect(),
            1 => blocks.iter().flat_map(|b| [b[1], b[4]]).collect(),
            _ => blocks.iter().map(|b| b[2]).collect(),
        };
        sizes.sort_unstable();
        sizes.dedup();
        sizes.into_iter().flat_map(edges).collect()
    }

    /// Every blocking edge of every kernel, in each dimension in turn (the other two small
    /// and odd), with each epilogue: the same cases every run, each set that runs here.
    #[test]
    fn every_block_edge_matches_the_reference() {
        let mut cases = Vec::new();
        for (dim, others) in [(0, [13, 9]), (1, [7, 9]), (2, [7, 13])] {
            for size in boundaries(dim) {
                let mut shape = others.to_vec();
                shape.insert(dim, size);
                cases.push((shape[0], shape[1], shape[2]));
            }
        }
        for (i, &(m, n, k)) in cases.iter().enumerate() {
            let activation = Activation::ALL[i % Activation::ALL.len()];
            let case = Case::new(m, n, k, i as u64, i % 2 == 0, i % 3 != 0, activation);
            for isa in isas() {
                case.check(&case.run(isa, 1 + i % 3))
                    .unwrap_or_else(|e| panic!("{} on {isa:?}: {e}", i));
            }
            for format in [WeightFormat::Bf16, WeightFormat::Int8] {
                for micro in Micro::all_here(format) {
                    case.check_format(format, &case.run_on(micro, 1 + i % 3))
                        .unwrap_or_else(|e| panic!("{} on {micro:?}: {e}", i));
                }
            }
        }
    }

    /// Random sizes in dimension `dim` (see `boundaries`): small, at a block edge, or
    /// anywhere up to past two of its largest blocks.
    fn size(dim: usize) -> impl Strategy<Value = usize> {
        let edges = boundaries(dim);
        let largest = *edges.last().expect("every dimension has blocks");
        prop_oneof![1..20usize, prop::sample::select(edges), 1..largest]
    }

    /// `m, n, k` of at most 2M multiply-adds, so a case stays quick under valgrind.
    fn shape() -> impl Strategy<Value = (usize, usize, usize)> {
        (size(0), size(1), size(2)).prop_filter("at most 2M multiply-adds", |&(m, n, k)| {
            m * n * k <= 2_000_000
        })
    }

    proptest! {
        // A fixed seed: every run draws the same cases.
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6e6d),
            ..ProptestConfig::with_cases(crate::proptest_cases(96))
        })]

        #[test]
        fn matches_the_reference(
            (m, n, k) in shape(), seed in any::<u64>(),
            bias in any::<bool>(), residual in any::<bool>(), activation in activation(),
            threads in 1..=3usize,
        ) {
            let case = Case::new(m, n, k, seed, bias, residual, activation);
            for isa in isas() {
                case.check(&case.run(isa, threads))?;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0xbf16),
            ..ProptestConfig::with_cases(crate::proptest_cases(48))
        })]

        /// Every bf16 and int8 kernel this CPU runs against the reference of its format.
        #[test]
        fn reduced_precision_matches_the_reference(
            (m, n, k) in shape(), seed in any::<u64>(),
            bias in any::<bool>(), residual in any::<bool>(), activation in activation(),
            threads in 1..=3usize, int8 in any::<bool>(),
        ) {
            let case = Case::new(m, n, k, seed, bias, residual, activation);
            let format = if int8 { WeightFormat::Int8 } else { WeightFormat::Bf16 };
            for micro in Micro::all_here(format) {
                case.check_format(format, &case.run_on(micro, threads))?;
            }
        }

        /// On 8-bit values that quantize to themselves (rows spanning 0 to 255, weight rows
        /// whose largest magnitude is 127, so every scale is 1 and every zero point 0),
        /// every int8 kernel gives the exact integer dot products: no saturation, no
        /// rounding (the sums stay below 2²⁴, so f32 holds them exactly).
        #[test]
        fn int8_products_are_exact(
            m in 1..40usize, n in 1..150usize, k in 2..500usize, seed in any::<u64>(),
            threads in 1..=2usize,
        ) {
            let mut rng = crate::rng::Rng::new(seed);
            let mut a: Vec<f32> = (0..m * k).map(|_| (rng.next_u64() % 256) as f32).collect();
            let mut w: Vec<f32> = (0..n * k).map(|_| (rng.next_u64() % 255) as f32 - 127.0).collect();
            for row in a.chunks_exact_mut(k) {
                row[0] = 0.0;
                row[1] = 255.0;
            }
            for row in w.chunks_exact_mut(k) {
                row[0] = 127.0;
            }
            let case = Case { m, n, k, a, w, bias: None, residual: None, activation: Activation::Identity };
            let mut exact = vec![0.0; m * n];
            scalar::gemm(m, n, k, &case.a, &case.w, &mut exact, &Epilogue::NONE);
            for micro in Micro::all_here(WeightFormat::Int8) {
                prop_assert_eq!(&case.run_on(micro, threads), &exact, "{:?}", micro);
            }
        }
    }

    /// Deep products of 8-bit values, past every int8 kernel's K block, still exact: the
    /// weights are small, so the sums stay below 2²⁴ and the blocks add exactly in f32.
    #[test]
    fn int8_products_across_k_blocks_are_exact() {
        let (m, n, k) = (13, 70, 2 * 3072 + 5);
        let mut rng = crate::rng::Rng::new(7);
        let mut a: Vec<f32> = (0..m * k).map(|_| (rng.next_u64() % 256) as f32).collect();
        let mut w: Vec<f32> = (0..n * k)
            .map(|_| (rng.next_u64() % 5) as f32 - 2.0)
            .collect();
        for row in a.chunks_exact_mut(k) {
            row[0] = 0.0;
            row[1] = 255.0;
        }
        for row in w.chunks_exact_mut(k) {
            row[k - 1] = 127.0;
        }
        let case = Case {
            m,
            n,
            k,
            a,
            w,
            bias: None,
            residual: None,
            activation: Activation::Identity,
        };
        let mut exact = vec![0.0; m * n];
        scalar::gemm(m, n, k, &case.a, &case.w, &mut exact, &Epilogue::NONE);
        for micro in Micro::all_here(WeightFormat::Int8) {
            assert_eq!(case.run_on(micro, 2), exact, "{micro:?}");
        }
    }

    /// The kernel chosen for each format is the best the CPU's flags allow, read from
    /// /proc/cpuinfo independently of the feature checks: a broken check cannot quietly
    /// move bf16 off `vdpbf16ps` or int8 off `vpdpbusd`.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn the_dot_product_kernels_are_chosen_where_the_cpu_has_them() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let flags = cpuinfo
            .lines()
            .find(|line| line.starts_with("flags"))
            .unwrap_or_default()
            .to_string();
        let has = |flag: &str| flags.split_whitespace().any(|f| f == flag);
        if !crate::runs_here(Isa::Avx512) {
            return;
        }
        assert_eq!(has_bf16_dot(), has("avx512_bf16"));
        assert_eq!(has_vnni(), has("avx512_vnni") && has("avx512bw"));
        let case = Case::new(7, 70, 30, 1, true, false, Activation::Gelu);
        let bf16 = case.packed(Micro::best(WeightFormat::Bf16, Isa::Avx512));
        let int8 = case.packed(Micro::best(WeightFormat::Int8, Isa::Avx512));
        let (want_bf16, want_int8) = (
            if has("avx512_bf16") {
                "avx512-bf16-dot"
            } else {
                "avx512-bf16-widened"
            },
            if has("avx512_vnni") {
                "avx512-vnni-int8"
            } else {
                "avx2-int8"
            },
        );
        assert_eq!(bf16.kernel_name(), want_bf16);
        assert_eq!(int8.kernel_name(), want_int8);
    }

    #[test]
    fn model_shapes_match_the_reference() {
        let shapes = [
            (197, 384, 1152),
            (197, 1536, 384),
            (197, 768, 3072),
            (1, 384, 1000),
            (3137, 64, 96),
        ];
        for (i, (m, k, n)) in shapes.into_iter().enumerate() {
            let case = Case::new(
                m,
                n,
                k,
                i as u64,
                true,
                i % 2 == 0,
                Activation::ALL[i * 3 % Activation::ALL.len()],
            );
            for isa in isas() {
                case.check(&case.run(isa, 2)).unwrap();
            }
        }
    }

    #[test]
    fn empty_depth_gives_the_epilogue_of_zero() {
        let case = Case::new(5, 19, 0, 7, true, true, Activation::Gelu);
        for isa in isas() {
            case.check(&case.run(isa, 2)).unwrap();
        }
    }

    #[test]
    fn thread_count_does_not_change_a_bit() {
        let shapes = [
            (1, 1000, 384),
            (7, 33, 300),
            (197, 384, 768),
            (1025, 96, 64),
            (60, 1000, 17),
        ];
        for (i, (m, n, k)) in shapes.into_iter().enumerate() {
            let case = Case::new(m, n, k, 100 + i as u64, true, true, Activation::Gelu);
            for isa in isas() {
                let one = case.run(isa, 1);
                for threads in [2, 3] {
                    let many = case.run(isa, threads);
                    assert!(
                        one.iter()
                            .zip(&many)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{m}×{n}×{k} on {isa:?} differs with {threads} threads"
                    );
                }
            }
        }
    }
}
