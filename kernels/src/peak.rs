//! This CPU's FMA peak for an instruction set: independent FMA chains, all in registers,
//! on every thread of a pool. The benchmarks quote kernels as a fraction of it and
//! measure it in the same run, because a shared machine's peak drifts from minute to
//! minute. The peaks of the reduced-precision dot products (bf16 and int8, [`Dot`]) are
//! measured the same way, for the bf16 and int8 kernels to be quoted against.

use std::hint::black_box;

use crate::simd::F32s;
#[cfg(target_arch = "aarch64")]
use crate::simd::Neon;
#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2, Avx512};
use crate::threads::ThreadPool;
use crate::Isa;

/// Independent chains per thread: enough to cover the FMA latency (4 cycles) on two
/// pipes three times over, as the GEMM's accumulators do.
const CHAINS: usize = 12;

/// Runs `steps` steps of `CHAINS` vector FMAs on each of `pool`'s threads and returns the
/// floating-point operations done (2 per lane per FMA). Panics if the CPU lacks `isa`.
pub fn fma_chains(isa: Isa, pool: &ThreadPool, steps: usize) -> u64 {
    assert!(isa.is_supported(), "this CPU lacks {isa:?}");
    let threads = pool.threads();
    pool.run(threads, &|_| {
        black_box(chains_on(isa, steps));
    });
    (threads * steps * CHAINS * 2 * isa.lanes()) as u64
}

/// One thread's chains on `isa`'s vectors: the sum of every lane of every chain.
fn chains_on(isa: Isa, steps: usize) -> f32 {
    match isa {
        // SAFETY (all three): `fma_chains` checked that the CPU supports `isa`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { chains_avx512(steps) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { chains_avx2(steps) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { chains_neon(steps) },
        _ => scalar_chains(steps),
    }
}

fn scalar_chains(steps: usize) -> f32 {
    let mut acc = [1.0f32; CHAINS];
    for _ in 0..steps {
        for x in &mut acc {
            *x = black_box(*x).mul_add(0.999_999, 1e-7);
        }
    }
    acc.iter().sum()
}

/// `steps` steps of `CHAINS` independent vector FMAs, and the sum of their lanes.
///
/// # Safety
/// The CPU must support `V`'s instruction set.
#[inline(always)]
unsafe fn chains<V: F32s>(steps: usize) -> f32 {
    let (a, b) = (V::splat(0.999_999), V::splat(1e-7));
    let mut acc = [V::splat(1.0); CHAINS];
    for _ in 0..steps {
        for x in &mut acc {
            *x = x.fma(a, b);
        }
    }
    acc.into_iter()
        .fold(V::zero(), |s, x| s.add(x))
        .reduce_sum()
}

/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn chains_avx512(steps: usize) -> f32 {
    chains::<Avx512>(steps)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains_avx2(steps: usize) -> f32 {
    chains::<Avx2>(steps)
}

/// # Safety
/// The CPU must support NEON.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn chains_neon(steps: usize) -> f32 {
    chains::<Neon>(steps)
}

/// A reduced-precision dot-product instruction whose peak [`dot_chains`] measures: each
/// step of a chain multiplies pairs of narrow numbers and adds the products into the
/// wider lanes of an accumulator, as the bf16 and int8 GEMM kernels do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dot {
    /// `vdpbf16ps` on 512 bits (AVX512_BF16): 32 bf16 products into 16 f32 lanes.
    Bf16Avx512,
    /// `vpdpbusd` on 512 bits (AVX512_VNNI): 64 u8×i8 products into 16 i32 lanes.
    Int8Vnni512,
    /// `vpmaddwd` then `vpaddd` on 256 bits (AVX2): 16 i16 products into 8 i32 lanes,
    /// which is what an int8 kernel without VNNI runs once it has widened its operands to
    /// i16. The pair is counted as one step.
    Int8Avx2,
}

impl Dot {
    /// Every dot product measured, widest first.
    pub const ALL: [Dot; 3] = [Dot::Bf16Avx512, Dot::Int8Vnni512, Dot::Int8Avx2];

    /// A short name for bench ids and reports.
    pub fn name(self) -> &'static str {
        match self {
            Dot::Bf16Avx512 => "bf16-avx512",
            Dot::Int8Vnni512 => "int8-vnni512",
            Dot::Int8Avx2 => "int8-avx2-madd",
        }
    }

    /// Products one step of one chain computes.
    pub fn products(self) -> usize {
        match self {
            Dot::Bf16Avx512 => 32,
            Dot::Int8Vnni512 => 64,
            Dot::Int8Avx2 => 16,
        }
    }

    /// The instruction set whose vectors it runs on: the dot is treated as missing when
    /// that set is ([`Isa::is_supported`], which `VITMSN_MAX_ISA` caps).
    fn isa(self) -> Isa {
        match self {
            Dot::Bf16Avx512 | Dot::Int8Vnni512 => Isa::Avx512,
            Dot::Int8Avx2 => Isa::Avx2Fma,
        }
    }

    /// Whether this CPU has the instruction, and `VITMSN_MAX_ISA` allows its vectors.
    pub fn is_supported(self) -> bool {
        self.isa().is_supported() && self.in_this_cpu()
    }

    /// The CPU features beyond [`Dot::isa`]'s that the instruction needs.
    fn in_this_cpu(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Dot::Bf16Avx512 => std::arch::is_x86_feature_detected!("avx512bf16"),
            #[cfg(target_arch = "x86_64")]
            Dot::Int8Vnni512 => {
                std::arch::is_x86_feature_detected!("avx512vnni")
                    && std::arch::is_x86_feature_detected!("avx512bw")
            }
            #[cfg(target_arch = "x86_64")]
            Dot::Int8Avx2 => true,
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// Runs `steps` steps of `CHAINS` independent `dot` instructions on each of `pool`'s
/// threads and returns the operations done, 2 per product (a multiply and an add: 64 per
/// 512-bit `vdpbf16ps`, 128 per 512-bit `vpdpbusd`, 32 per 256-bit `vpmaddwd`+`vpaddd`),
/// so that they read as FLOP/s beside [`fma_chains`]. `None` where the CPU lacks `dot`.
pub fn dot_chains(dot: Dot, pool: &ThreadPool, steps: usize) -> Option<u64> {
    if !dot.is_supported() {
        return None;
    }
    let threads = pool.threads();
    pool.run(threads, &|_| {
        black_box(dot_chains_on(dot, steps));
    });
    Some((threads * steps * CHAINS * 2 * dot.products()) as u64)
}

/// One thread's chains of `dot`: the sum of every lane of every chain, in f64 (exact for
/// the tests' step counts).
fn dot_chains_on(dot: Dot, steps: usize) -> f64 {
    assert!(dot.is_supported(), "this CPU lacks {dot:?}");
    match dot {
        // SAFETY (all three): the assertion above checked that the CPU has the features
        // each entry point enables.
        #[cfg(target_arch = "x86_64")]
        Dot::Bf16Avx512 => unsafe { dot_chains_bf16_avx512(steps) },
        #[cfg(target_arch = "x86_64")]
        Dot::Int8Vnni512 => unsafe { dot_chains_vnni512(steps) },
        #[cfg(target_arch = "x86_64")]
        Dot::Int8Avx2 => unsafe { dot_chains_madd_avx2(steps) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no dot product is supported off x86-64"),
    }
}

/// `steps` steps of `CHAINS` independent applications of `step`, from `start`: the body
/// every dot entry point monomorphises with its instruction, so that it inlines.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn run_chains<V: Copy>(steps: usize, start: V, step: impl Fn(V) -> V) -> [V; CHAINS] {
    let mut acc = [start; CHAINS];
    for _ in 0..steps {
        for x in &mut acc {
            *x = step(*x);
        }
    }
    acc
}

/// The sum of the lanes of `chains`, each lane read as `T` (a vector of `N` of them).
///
/// # Safety
/// `V` must be `N` values of `T` with no padding (a SIMD vector of `T` lanes).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn lane_sum<V: Copy, T: Copy + Into<f64>, const N: usize>(chains: &[V; CHAINS]) -> f64 {
    assert_eq!(std::mem::size_of::<V>(), std::mem::size_of::<[T; N]>());
    chains
        .iter()
        .flat_map(|v| {
            // SAFETY: same size (asserted), and the caller promises `V` is `N` lanes of `T`,
            // for which every bit pattern is valid.
            unsafe { std::mem::transmute_copy::<V, [T; N]>(v) }
        })
        .map(Into::into)
        .sum()
}

/// bf16 chains: every lane runs acc ← acc + 2⁻¹⁰·2⁻¹⁰ + 2⁻¹⁰·2⁻¹⁰ from 1, exact in f32 for
/// 2²⁰ steps and more.
///
/// # Safety
/// The CPU must support AVX-512F and AVX512_BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn dot_chains_bf16_avx512(steps: usize) -> f64 {
    use std::arch::x86_64::*;
    // Opaque to the optimiser, so it cannot fold the products into a constant add.
    let x = black_box(_mm512_cvtne2ps_pbh(
        _mm512_set1_ps(BF16_FACTOR),
        _mm512_set1_ps(BF16_FACTOR),
    ));
    let chains = run_chains(steps, _mm512_set1_ps(1.0), |acc| {
        _mm512_dpbf16_ps(acc, x, x)
    });
    // SAFETY (the lane sum): a __m512 is 16 f32 lanes.
    lane_sum::<_, f32, 16>(&chains)
}

/// Each bf16 factor of the chains: 2⁻¹⁰, exact in bf16.
#[cfg(target_arch = "x86_64")]
const BF16_FACTOR: f32 = 1.0 / 1024.0;

/// The int8 chains' operands: u8 `INT8_A` times i8 `INT8_B`, four products per i32 lane.
#[cfg(target_arch = "x86_64")]
const INT8_A: u8 = 3;
#[cfg(target_arch = "x86_64")]
const INT8_B: i8 = -2;

/// VNNI chains: every lane runs acc ← acc + 4·(`INT8_A`·`INT8_B`) from 0.
///
/// # Safety
/// The CPU must support AVX-512F, AVX512_BW and AVX512_VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn dot_chains_vnni512(steps: usize) -> f64 {
    use std::arch::x86_64::*;
    // Opaque to the optimiser, so it cannot fold the products into a constant add.
    let a = black_box(_mm512_set1_epi8(INT8_A as i8));
    let b = black_box(_mm512_set1_epi8(INT8_B));
    let chains = run_chains(steps, _mm512_setzero_si512(), |acc| {
        _mm512_dpbusd_epi32(acc, a, b)
    });
    // SAFETY (the lane sum): a __m512i is read as 16 i32 lanes, as vpdpbusd writes them.
    lane_sum::<_, i32, 16>(&chains)
}

/// The i16 pair that multiplies each i32 lane's two i16 halves in the AVX2 chains.
#[cfg(target_arch = "x86_64")]
const MADD_B: [i16; 2] = [3, -5];
/// Where each lane of the AVX2 chains starts.
#[cfg(target_arch = "x86_64")]
const MADD_START: i32 = 0x0001_0007;

/// AVX2 int8 chains without VNNI: every lane runs acc ← acc + madd(acc, b). The
/// accumulator is the `vpmaddwd`'s own operand, since a product of loop-invariant
/// operands would be hoisted out of the loop; a step is then a `vpmaddwd` → `vpaddd`
/// dependency, whose latency (4–6 cycles) `CHAINS` covers on two multiply pipes.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_chains_madd_avx2(steps: usize) -> f64 {
    use std::arch::x86_64::*;
    let b = black_box(_mm256_set1_epi32(
        (MADD_B[0] as u16 as i32) | ((MADD_B[1] as i32) << 16),
    ));
    let chains = run_chains(steps, _mm256_set1_epi32(MADD_START), |acc| {
        _mm256_add_epi32(acc, _mm256_madd_epi16(acc, b))
    });
    // SAFETY (the lane sum): a __m256i is read as 8 i32 lanes, as vpaddd writes them.
    lane_sum::<_, i32, 8>(&chains)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chains do the work the flop count claims: every lane runs x ← 0.999999·x + 1e-7
    /// from 1 (replayed here on one f32), and the sum over all lanes tells both how many
    /// steps ran (half as many would leave it 1% higher) and how many lanes a vector has
    /// (`isa.lanes()`, which the count multiplies by).
    #[test]
    fn the_chains_do_the_work_counted() {
        let steps = 20_000;
        let lane = (0..steps).fold(1.0f32, |x, _| x.mul_add(0.999_999, 1e-7)) as f64;
        assert!((lane - 0.982).abs() < 1e-3, "{lane}");
        for isa in crate::tested_isas() {
            let want = lane * (CHAINS * isa.lanes()) as f64;
            let got = chains_on(isa, steps) as f64;
            assert!(
                (got - want).abs() <= 1e-5 * want,
                "{}: {got}, want {want}",
                isa.name()
            );
        }
    }

    #[test]
    fn counts_the_flops_of_every_thread() {
        let pool = ThreadPool::new(2);
        for isa in crate::tested_isas() {
            assert_eq!(
                fma_chains(isa, &pool, 10),
                (2 * 10 * CHAINS * 2 * isa.lanes()) as u64
            );
        }
    }

    /// One lane of one step of the AVX2 chains, as `vpmaddwd` then `vpaddd` compute it.
    #[cfg(target_arch = "x86_64")]
    fn madd_step(x: i32) -> i32 {
        let (lo, hi) = (x as i16 as i32, (x >> 16) as i16 as i32);
        x.wrapping_add((lo * MADD_B[0] as i32).wrapping_add(hi * MADD_B[1] as i32))
    }

    /// Whether the tests run `dot` here: [`Dot::is_supported`], checked against the flags
    /// of /proc/cpuinfo where they can be read (and `VITMSN_MAX_ISA` does not hide the
    /// vectors `dot` runs on), so a broken feature check fails instead of skipping.
    fn dot_runs_here(dot: Dot) -> bool {
        // The flags beyond those of the vectors' instruction set.
        let extra: &[&str] = match dot {
            Dot::Bf16Avx512 => &["avx512_bf16"],
            Dot::Int8Vnni512 => &["avx512bw", "avx512_vnni"],
            Dot::Int8Avx2 => &[],
        };
        let supported = dot.is_supported();
        let flags = crate::cpu_flags_have(dot.isa()).zip(crate::cpu_has_flags(extra));
        if let (true, Some((isa, extra))) = (dot.isa().below_max(), flags) {
            assert_eq!(
                supported,
                isa && extra,
                "{}: the feature check and /proc/cpuinfo disagree",
                dot.name()
            );
        }
        supported
    }

    /// Each dot product's chains do the work counted: every lane's value after `steps`
    /// steps, replayed here on scalars, times the lanes of `CHAINS` vectors (a missing
    /// step or lane shows in the sum).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_dot_chains_do_the_work_counted() {
        let steps = 20_000;
        for dot in Dot::ALL.into_iter().filter(|dot| dot_runs_here(*dot)) {
            // (each lane's value, lanes per vector, products per lane per step)
            let (lane, lanes, per_lane) = match dot {
                Dot::Bf16Avx512 => {
                    let product = (BF16_FACTOR * BF16_FACTOR) as f64;
                    (1.0 + steps as f64 * 2.0 * product, 16, 2)
                }
                Dot::Int8Vnni512 => {
                    let product = INT8_A as f64 * INT8_B as f64;
                    (steps as f64 * 4.0 * product, 16, 4)
                }
                Dot::Int8Avx2 => {
                    let lane = (0..steps).fold(MADD_START, |x, _| madd_step(x));
                    (lane as f64, 8, 2)
                }
            };
            assert_eq!(dot.products(), lanes * per_lane, "{}", dot.name());
            assert_eq!(
                dot_chains_on(dot, steps),
                lane * (CHAINS * lanes) as f64,
                "{}",
                dot.name()
            );
        }
        // The AVX2 replay does not settle on a fixed point, which would hide missing steps.
        let replay = |n| (0..n).fold(MADD_START, |x, _| madd_step(x));
        assert_ne!(replay(steps), replay(steps - 1));
    }

    /// Each dot product counts 2 operations per product on every thread where the CPU has
    /// it, and is `None` where it lacks it.
    #[test]
    fn dot_chains_count_every_thread_or_say_none() {
        let pool = ThreadPool::new(2);
        for dot in Dot::ALL {
            let got = dot_chains(dot, &pool, 10);
            if dot_runs_here(dot) {
                assert_eq!(got, Some((2 * 10 * CHAINS * 2 * dot.products()) as u64));
                assert!(got.unwrap() > 0);
            } else {
                assert_eq!(got, None, "{}", dot.name());
            }
        }
    }
}
