//! This CPU's FMA peak for an instruction set: independent FMA chains, all in registers,
//! on every thread of a pool. The benchmarks quote kernels as a fraction of it and
//! measure it in the same run, because a shared machine's peak drifts from minute to
//! minute.

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
}
