//! This CPU's FMA peak for an instruction set: independent FMA chains, all in registers,
//! on every thread of a pool. The benchmarks quote kernels as a fraction of it and
//! measure it in the same run, because a shared machine's peak drifts from minute to
//! minute.

use std::hint::black_box;

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
        let sum = match isa {
            // SAFETY (all three): checked above that the CPU supports `isa`.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::chains_avx512(steps) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => unsafe { x86::chains_avx2(steps) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { arm::chains_neon(steps) },
            _ => scalar_chains(steps),
        };
        black_box(sum);
    });
    (threads * steps * CHAINS * 2 * isa.lanes()) as u64
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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::CHAINS;

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn chains_avx512(steps: usize) -> f32 {
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..steps {
            for x in &mut acc {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        _mm512_reduce_add_ps(
            acc.into_iter()
                .fold(_mm512_setzero_ps(), |s, x| _mm512_add_ps(s, x)),
        )
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn chains_avx2(steps: usize) -> f32 {
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..steps {
            for x in &mut acc {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut lanes = [0.0f32; 8];
        let sum = acc
            .into_iter()
            .fold(_mm256_setzero_ps(), |s, x| _mm256_add_ps(s, x));
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        lanes.iter().sum()
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    use super::CHAINS;

    /// # Safety
    /// The CPU must support NEON.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn chains_neon(steps: usize) -> f32 {
        let (a, b) = (vdupq_n_f32(0.999_999), vdupq_n_f32(1e-7));
        let mut acc = [vdupq_n_f32(1.0); CHAINS];
        for _ in 0..steps {
            for x in &mut acc {
                *x = vfmaq_f32(b, *x, a);
            }
        }
        vaddvq_f32(
            acc.into_iter()
                .fold(vdupq_n_f32(0.0), |s, x| vaddq_f32(s, x)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_flops_of_every_thread() {
        let pool = ThreadPool::new(2);
        for isa in Isa::supported() {
            assert_eq!(
                fma_chains(isa, &pool, 10),
                (2 * 10 * CHAINS * 2 * isa.lanes()) as u64
            );
        }
    }
}
