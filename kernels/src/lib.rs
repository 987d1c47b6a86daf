//! CPU kernels of the vitmsn engine.
//!
//! `scalar` holds the reference version of every op; optimised versions live beside it,
//! one module per op family, written once over the f32 vector vocabulary of `simd` with a
//! thin entry point per instruction set, and are property-tested against it.

use std::sync::OnceLock;

pub mod activation;
pub mod aligned;
pub mod attention;
pub mod bf16;
pub mod dispatch;
mod expf;
pub mod gemm;
pub mod norm;
pub mod peak;
pub mod quant;
pub mod rng;
pub mod scalar;
mod simd;
pub mod threads;

/// The activation functions of transformers' `ACT2FN` that ViT configs use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    Identity,
    /// `gelu`: the exact, erf-based GELU.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    /// `gelu_fast`: the tanh approximation written as transformers' `FastGELUActivation`.
    GeluFast,
    /// `quick_gelu`: `x · sigmoid(1.702 x)`.
    QuickGelu,
    Relu,
    Relu6,
    /// `relu2`: `relu(x)²`.
    Relu2,
    LeakyRelu,
    Selu,
    /// `silu`, `swish`: `x · sigmoid(x)`.
    Silu,
    Mish,
    Tanh,
    Sigmoid,
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const SELU_ALPHA: f32 = 1.673_263_2;
const SELU_SCALE: f32 = 1.050_701;

impl Activation {
    /// Every variant, for tests that cover them all.
    pub const ALL: [Activation; 14] = [
        Self::Identity,
        Self::Gelu,
        Self::GeluTanh,
        Self::GeluFast,
        Self::QuickGelu,
        Self::Relu,
        Self::Relu6,
        Self::Relu2,
        Self::LeakyRelu,
        Self::Selu,
        Self::Silu,
        Self::Mish,
        Self::Tanh,
        Self::Sigmoid,
    ];

    /// Looks up a `hidden_act` name as transformers spells it.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "linear" | "identity" => Self::Identity,
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Self::GeluTanh,
            "gelu_fast" => Self::GeluFast,
            "quick_gelu" => Self::QuickGelu,
            "relu" => Self::Relu,
            "relu6" => Self::Relu6,
            "relu2" => Self::Relu2,
            "leaky_relu" => Self::LeakyRelu,
            "selu" => Self::Selu,
            "silu" | "swish" => Self::Silu,
            "mish" => Self::Mish,
            "tanh" => Self::Tanh,
            "sigmoid" => Self::Sigmoid,
            _ => return None,
        })
    }

    /// The reference value of the activation at `x`.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Self::Identity => x,
            Self::Gelu => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
            Self::GeluTanh => {
                0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
            }
            Self::GeluFast => {
                0.5 * x * (1.0 + (x * SQRT_2_OVER_PI * (1.0 + 0.044715 * x * x)).tanh())
            }
            Self::QuickGelu => x * sigmoid(1.702 * x),
            Self::Relu => x.max(0.0),
            Self::Relu6 => x.clamp(0.0, 6.0),
            Self::Relu2 => x.max(0.0) * x.max(0.0),
            Self::LeakyRelu => {
                if x >= 0.0 {
                    x
                } else {
                    0.01 * x
                }
            }
            Self::Selu => {
                if x > 0.0 {
                    SELU_SCALE * x
                } else {
                    SELU_SCALE * SELU_ALPHA * x.exp_m1()
                }
            }
            Self::Silu => x * sigmoid(x),
            Self::Mish => x * softplus(x).tanh(),
            Self::Tanh => x.tanh(),
            Self::Sigmoid => sigmoid(x),
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// PyTorch's softplus with its default threshold of 20.
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// What a GEMM does to its product before storing it: `act(c + bias) + residual`.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    /// One value per output column.
    pub bias: Option<&'a [f32]>,
    pub activation: Activation,
    /// A full `m×n` tensor added after the activation.
    pub residual: Option<&'a [f32]>,
}

impl Epilogue<'_> {
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: None,
        activation: Activation::Identity,
        residual: None,
    };
}

/// Sizes of one multi-head attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttentionShape {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

/// The instruction sets the kernels have versions for, best first. A kernel without a
/// version for an instruction set runs the best one it has below it (AVX-512 CPUs run
/// AVX2 code; anything else runs the reference).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F, on top of AVX2 and FMA.
    Avx512,
    Avx2Fma,
    Neon,
    Scalar,
}

impl Isa {
    /// Every instruction set, best first.
    pub const ALL: [Isa; 4] = [Isa::Avx512, Isa::Avx2Fma, Isa::Neon, Isa::Scalar];

    /// The best instruction set this CPU supports.
    pub fn detect() -> Self {
        Self::supported()[0]
    }

    /// Every instruction set this CPU runs, best first; `Scalar` is always last.
    pub fn supported() -> Vec<Self> {
        Self::ALL
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// The name users select it by (`--isa`, `VITMSN_ISA`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2Fma => "avx2",
            Isa::Neon => "neon",
            Isa::Scalar => "scalar",
        }
    }

    /// The instruction set called `name` (see [`Isa::name`]), whether or not this CPU
    /// supports it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|isa| isa.name() == name)
    }

    /// `f32` lanes of one vector register.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2Fma => 8,
            Isa::Neon => 4,
            Isa::Scalar => 1,
        }
    }

    /// Whether this CPU can run the kernels of `self`, and `VITMSN_MAX_ISA` allows them.
    pub fn is_supported(self) -> bool {
        self.below_max() && self.in_this_cpu()
    }

    /// Whether `self` is at or below `VITMSN_MAX_ISA` (an ISA name), which makes the engine
    /// treat the sets above it as missing, as oneDNN's `ONEDNN_MAX_CPU_ISA` does: for tools
    /// that cannot run them (valgrind does not decode AVX-512) and to run a lower
    /// machine's paths everywhere. Unset or not a name: no cap.
    fn below_max(self) -> bool {
        static MAX: OnceLock<Option<Isa>> = OnceLock::new();
        let max = MAX.get_or_init(|| {
            std::env::var("VITMSN_MAX_ISA")
                .ok()
                .and_then(|name| Isa::from_name(&name))
        });
        let rank = |isa: Isa| Self::ALL.iter().position(|&i| i == isa);
        max.is_none_or(|max| rank(self) >= rank(max))
    }

    fn in_this_cpu(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        let avx2_fma = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => avx2_fma,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx2_fma && std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            _ => false,
        }
    }
}

/// The property tests' case count: `PROPTEST_CASES` when set (an emulated CI run needs
/// fewer), else each test's own default.
#[cfg(test)]
pub(crate) fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

/// Whether the tests run `isa` here: [`Isa::is_supported`], checked against what
/// /proc/cpuinfo says where it can be read independently (Linux on x86-64; qemu-user shows
/// the host's flags elsewhere). A test that skips a set this CPU lacks asks this, so a
/// broken feature check fails the test instead of quietly shrinking its coverage.
#[cfg(test)]
pub(crate) fn runs_here(isa: Isa) -> bool {
    let supported = isa.is_supported();
    // Sets above VITMSN_MAX_ISA are left out: tools run under that cap, such as valgrind,
    // report a CPUID without them.
    if let (true, Some(in_flags)) = (isa.below_max(), cpu_flags_have(isa)) {
        assert_eq!(
            isa.in_this_cpu(),
            in_flags,
            "{}: the feature check and /proc/cpuinfo disagree",
            isa.name()
        );
    }
    supported
}

/// The instruction sets the tests run here, best first (see [`runs_here`]).
#[cfg(test)]
pub(crate) fn tested_isas() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|&isa| runs_here(isa)).collect()
}

/// Whether /proc/cpuinfo's flags include what `isa` needs; `None` where they cannot be
/// read independently of the feature check.
#[cfg(test)]
fn cpu_flags_have(isa: Isa) -> Option<bool> {
    match isa {
        Isa::Avx512 => cpu_has_flags(&["avx512f", "avx2", "fma"]),
        Isa::Avx2Fma => cpu_has_flags(&["avx2", "fma"]),
        Isa::Neon => cpu_has_flags(&[]).map(|_| false),
        Isa::Scalar => cpu_has_flags(&[]),
    }
}

/// Whether /proc/cpuinfo's flags include every one of `wanted` (its names, such as
/// `avx512_bf16`); `None` where they cannot be read independently of the feature check.
#[cfg(test)]
fn cpu_has_flags(wanted: &[&str]) -> Option<bool> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return None;
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo");
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|line| line.starts_with("flags"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, flags)| flags.split_whitespace().collect())
        .unwrap_or_default();
    Some(wanted.iter().all(|flag| flags.contains(flag)))
}

#[cfg(all(test, target_os = "linux", target_arch = "x86_64"))]
mod tests {
    use super::Isa;

    /// The instruction sets detected are the ones the kernel reports for this CPU, read
    /// independently from /proc/cpuinfo: a broken feature check cannot quietly shrink the
    /// tests (which skip the sets a CPU lacks) to the portable kernels.
    #[test]
    fn detected_sets_match_the_cpu_flags() {
        for isa in Isa::ALL {
            super::runs_here(isa);
        }
    }
}
