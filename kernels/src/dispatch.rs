//! Which instruction set's code each kernel family has actually run, recorded by the
//! instruction-set-specific entry points themselves (the `#[target_feature]` functions and
//! the portable fallbacks), not by whoever asked for an instruction set: a dispatch that
//! silently fell back to portable code shows up as a set that never ran.
//!
//! The record is per process and only grows, so tests running side by side cannot hide
//! one another's kernels; recording is a relaxed load and, the first time only, an atomic
//! OR, so it costs nothing measurable in the micro-kernels.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::Isa;

/// The kernel families the CPU backend dispatches per instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `gemm::gemm_packed`'s micro-kernels (the activation epilogue runs inside them).
    Gemm,
    /// `attention::attention`'s register tiles, or the reference for `Isa::Scalar`.
    Attention,
    /// `norm::layer_norm`'s row kernels.
    LayerNorm,
    /// `activation::activation_inplace`.
    Activation,
    /// `gemm::gemm_packed` on bf16 weights: `vdpbf16ps` or a widening f32 kernel.
    GemmBf16,
    /// `gemm::gemm_packed` on int8 weights.
    GemmInt8,
}

impl Kernel {
    pub const ALL: [Kernel; 6] = [
        Kernel::Gemm,
        Kernel::Attention,
        Kernel::LayerNorm,
        Kernel::Activation,
        Kernel::GemmBf16,
        Kernel::GemmInt8,
    ];
}

static RAN: [AtomicU8; Kernel::ALL.len()] = [const { AtomicU8::new(0) }; Kernel::ALL.len()];

const fn bit(isa: Isa) -> u8 {
    match isa {
        Isa::Avx512 => 1,
        Isa::Avx2Fma => 2,
        Isa::Neon => 4,
        Isa::Scalar => 8,
    }
}

/// Notes that `kernel`'s code for `isa` is running. Called by that code only.
#[inline]
pub(crate) fn record(kernel: Kernel, isa: Isa) {
    let (ran, bit) = (&RAN[kernel as usize], bit(isa));
    if ran.load(Ordering::Relaxed) & bit == 0 {
        ran.fetch_or(bit, Ordering::Relaxed);
    }
}

/// The instruction sets whose code for `kernel` has run in this process, best first.
pub fn ran(kernel: Kernel) -> Vec<Isa> {
    let ran = RAN[kernel as usize].load(Ordering::Relaxed);
    Isa::ALL
        .into_iter()
        .filter(|&isa| ran & bit(isa) != 0)
        .collect()
}

/// The code `kernel` runs when asked for `isa`: its own version where it has one, else
/// the one it falls back to (NEON's activations and int8 GEMM are the reference's; an
/// AVX-512 CPU without VNNI runs the AVX2 int8 GEMM).
pub fn expected(kernel: Kernel, isa: Isa) -> Isa {
    match (kernel, isa) {
        (Kernel::Activation | Kernel::GemmInt8, Isa::Neon) => Isa::Scalar,
        (Kernel::GemmInt8, Isa::Avx512) if !crate::gemm::has_vnni() => Isa::Avx2Fma,
        _ => isa,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::{attention, AttentionScratch};
    use crate::gemm::{gemm_packed, PackedWeights};
    use crate::threads::ThreadPool;
    use crate::{activation, norm, Activation, AttentionShape, Epilogue};

    /// Runs each kernel family once on `isa`.
    fn run_every_kernel(isa: Isa, pool: &ThreadPool) {
        let x = crate::rng::Rng::values(1, 9 * 24, 1.0);
        let w = PackedWeights::new(isa, 9, 24, &x);
        let mut c = vec![0.0; 7 * 9];
        let epilogue = Epilogue {
            activation: Activation::Gelu,
            ..Epilogue::NONE
        };
        gemm_packed(7, &x, &w, &mut c, &epilogue, pool);
        let bf16 = PackedWeights::from_bf16(isa, 9, 24, &crate::bf16::from_f32_slice(&x));
        gemm_packed(7, &x, &bf16, &mut c, &epilogue, pool);
        let (values, scales) = crate::quant::quantize_weights(9, 24, &x);
        let int8 = PackedWeights::from_int8(isa, 9, 24, &values, &scales);
        gemm_packed(7, &x, &int8, &mut c, &epilogue, pool);
        let shape = AttentionShape {
            batch: 1,
            tokens: 7,
            heads: 1,
            head_dim: 8,
        };
        let mut context = vec![0.0; 7 * 8];
        let mut scratch = AttentionScratch::default();
        attention(
            isa,
            shape,
            &x,
            &[1.0],
            &mut context,
            None,
            pool,
            &mut scratch,
        );
        let mut out = vec![0.0; 7 * 24];
        norm::layer_norm(isa, 24, &x[..7 * 24], &x, &x, 1e-5, &mut out, pool);
        activation::activation_inplace(isa, Activation::Gelu, &mut out);
    }

    /// Each instruction set this CPU has (checked against /proc/cpuinfo) runs its own code
    /// in every kernel family: on an AVX2 host, the AVX2 micro-kernels, tiles and row
    /// kernels, not the portable ones it would fall back to.
    #[test]
    fn every_set_this_cpu_has_runs_its_own_kernels() {
        let pool = ThreadPool::new(2);
        let isas = crate::tested_isas();
        for &isa in &isas {
            run_every_kernel(isa, &pool);
        }
        for kernel in Kernel::ALL {
            for &isa in &isas {
                assert!(
                    ran(kernel).contains(&expected(kernel, isa)),
                    "{kernel:?} asked for {} never ran {:?}'s code; ran {:?}",
                    isa.name(),
                    expected(kernel, isa),
                    ran(kernel)
                );
            }
        }
    }
}
