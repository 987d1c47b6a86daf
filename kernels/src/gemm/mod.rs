//! Packed, cache-blocked GEMM: `c[m×n] = epilogue(a[m×k] · wᵀ)` with `w` stored `[n×k]`,
//! the semantics of `scalar::gemm`, BLIS-style.
//!
//! The weights are packed once, at model load, into [`PackedWeights`]: K blocks of
//! `KC` depth, each cut into panels of `NR` columns stored depth-major, zero-padded. Each
//! call reads `a` in place; only a row panel past C's last row is copied, padded to `MR`
//! rows, into a per-thread buffer that grows once and is then reused, so a warm call
//! allocates nothing. `loops` holds the loop nest and
//! the packing; each instruction set supplies one small micro-kernel behind
//! [`GemmKernel`] that multiplies an `MR×depth` panel of A by a `depth×NR` panel of B and
//! finishes the tile: after the last K block it applies `act(c + bias) + residual` to the
//! tile it just summed (in registers on x86), so the epilogue costs no pass over C. The
//! SIMD micro-kernels are one generic body (`tile`) in each set's tile shape.
//!
//! Threads split C into blocks of rows (and of columns when there are too few rows);
//! K is never split, so each element is summed in the same order whatever the thread
//! count and the results are bitwise identical.

use crate::aligned::AlignedVec;
use crate::threads::ThreadPool;
use crate::{Activation, Epilogue, Isa};

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
    const MR: usize;
    const NR: usize;
    const KC: usize;
    const MC: usize;
    const NC: usize;

    /// Multiplies the `MR×depth` A panel by the packed `depth×NR` B panel and stores the
    /// first `rows` rows of the `MR×NR` tile at `c` (row stride `ldc`): `c = c + a·b` when
    /// `accumulate`, else `c = a·b`; then, when `epilogue` is given,
    /// `c = act(c + bias) + residual`. The tile's other rows are computed and dropped, so
    /// C's last row panel needs no staging.
    ///
    /// # Safety
    /// The CPU must support the kernel's instruction set, and `rows` must be at most `MR`.
    /// `panels.a` must be valid for reads of `MR` rows of `depth` values `panels.a_stride`
    /// apart, and `panels.b` for `NR·depth` (`depth` steps of `NR` values, step after
    /// step). `c` must be valid for reads and writes of `rows` rows of `NR` values `ldc`
    /// apart, with no other thread touching them. The epilogue's `bias` must be valid for
    /// `NR` reads and its `residual` for `rows` rows of `NR` values `ldc` apart.
    unsafe fn kernel(
        panels: Panels,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        accumulate: bool,
        epilogue: Option<&TileEpilogue>,
    );
}

/// The operands of one micro-kernel call.
#[derive(Clone, Copy)]
pub(crate) struct Panels {
    pub depth: usize,
    /// `MR` rows of A, `a_stride` apart: read in place from A, or from a padded copy.
    pub a: *const f32,
    pub a_stride: usize,
    /// Packed B.
    pub b: *const f32,
    /// A hint, never dereferenced: the kernel may ask the cache for up to `depth·16`
    /// bytes from here, memory a later call reads; null when there is nothing to fetch.
    /// A forward meets each layer's weights once, from memory; fetched a call ahead,
    /// they arrive in time.
    pub prefetch: *const f32,
}

/// The epilogue of one `MR×NR` tile, as pointers to the tile's corner in each operand.
pub(crate) struct TileEpilogue {
    pub bias: Option<*const f32>,
    pub activation: Activation,
    /// Row stride `ldc`, the same as C's.
    pub residual: Option<*const f32>,
}

/// A weight matrix `w[n×k]` packed for the GEMM micro-kernel of one instruction set.
pub struct PackedWeights {
    isa: Isa,
    n: usize,
    k: usize,
    /// Depth of every K block but the last, which may be shallower.
    block_depth: usize,
    panels: AlignedVec,
}

impl PackedWeights {
    /// Packs `w`, stored `[n×k]` row-major (PyTorch's `nn.Linear` layout), for `isa`'s
    /// kernel.
    ///
    /// Panics if `w` is shorter than `n·k`, or if this CPU lacks `isa`. An instruction set
    /// with no kernel on this architecture gets the portable one.
    pub fn new(isa: Isa, n: usize, k: usize, w: &[f32]) -> Self {
        assert!(
            w.len() >= n * k,
            "weights hold {} values, not {n}×{k}",
            w.len()
        );
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => {
                assert!(isa.is_supported(), "this CPU lacks {isa:?}");
                loops::pack_weights::<avx2::Avx2Fma>(isa, n, k, w)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                assert!(isa.is_supported(), "this CPU lacks {isa:?}");
                loops::pack_weights::<avx512::Avx512>(isa, n, k, w)
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => loops::pack_weights::<neon::Neon>(isa, n, k, w),
            _ => loops::pack_weights::<portable::Portable>(isa, n, k, w),
        }
    }

    /// The instruction set whose kernel these weights are packed for.
    pub fn isa(&self) -> Isa {
        self.isa
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

/// `c[m×n] = epilogue(a[m×k] · wᵀ)` with the kernel `w` was packed for, on `pool`.
///
/// `a` is row-major with row stride `k`; `c` and the residual are row-major `m×n`, the
/// bias holds `n` values. Panics if a slice is too short.
pub fn gemm_packed(
    m: usize,
    a: &[f32],
    w: &PackedWeights,
    c: &mut [f32],
    epilogue: &Epilogue,
    pool: &ThreadPool,
) {
    match w.isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => loops::gemm::<avx2::Avx2Fma>(m, a, w, c, epilogue, pool),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => loops::gemm::<avx512::Avx512>(m, a, w, c, epilogue, pool),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => loops::gemm::<neon::Neon>(m, a, w, c, epilogue, pool),
        _ => loops::gemm::<portable::Portable>(m, a, w, c, epilogue, pool),
    }
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
            let packed = PackedWeights::new(isa, self.n, self.k, &self.w);
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
            let mut expected = vec![0.0; self.m * self.n];
            scalar::gemm(
                self.m,
                self.n,
                self.k,
                &self.a,
                &self.w,
                &mut expected,
                &self.epilogue(),
            );
            let max_a = self.a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let max_w = self.w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let sum_error = 1e-6 * self.k as f32 * max_a * max_w + 1e-6;
            for (i, (&got, &want)) in c.iter().zip(&expected).enumerate() {
                let tolerance = sum_error * (2.0 + 2.0 * want.abs()) + 1e-6 * want.abs();
                prop_assert!(
                    (got - want).abs() <= tolerance,
                    "{}×{}×{} {:?} at ({}, {}): got {got}, want {want}",
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
            #[cfg(target_arch = "x86_64")]
            of::<avx2::Avx2Fma>(),
            #[cfg(target_arch = "x86_64")]
            of::<avx512::Avx512>(),
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
