//! Where the graph meets the hardware: a backend owns the constants and the slot
//! buffers and runs one op at a time.

use crate::error::{Error, Result};
use crate::graph::{Constant, Graph, Op};
use crate::plan::{Plan, Slot};
use std::sync::Arc;
use vitmsn_kernels::gemm::WeightFormat;
use vitmsn_kernels::Isa;

pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
mod host;
pub mod memory;
pub mod scalar;

/// What every backend implements. A backend holds what forwards share (the constants,
/// a thread pool, a device); a [`Workspace`] holds what one forward at a time needs (slot
/// buffers, scratch), so that threads sharing a model each run in a workspace of their own.
/// The executor calls `load_constants` once per model, then per forward takes a workspace
/// and calls, on it, `prepare` when the graph changes, `write` for each input, `run` for
/// each node in order, then `read` for the requested outputs.
pub trait Backend: Send + Sync {
    /// The name users choose it by (`scalar`, `cpu`, `gpu`).
    fn name(&self) -> &'static str;
    /// Threads the backend computes on.
    fn threads(&self) -> usize {
        1
    }
    /// The instruction set of the CPU kernels it runs, for backends that choose one.
    fn isa(&self) -> Option<Isa> {
        None
    }
    /// The device it computes on when that is not this CPU's cores: a GPU adapter.
    fn device(&self) -> Option<Device> {
        None
    }
    /// The most bytes one forward's activations may take here, for backends that hold
    /// them to a budget (the GPU checks each buffer against the adapter's limits instead).
    fn memory_budget(&self) -> Option<u64> {
        None
    }
    /// Whether `Workspace::run` has finished the op when it returns, so timing it times the
    /// op. A backend that only records ops and runs them all in `read` says no.
    fn runs_ops_when_called(&self) -> bool {
        true
    }
    /// The precision its weights and products run in.
    fn precision(&self) -> Precision {
        Precision::F32
    }
    /// The format the backend takes `Linear` weights in (see `ConstData`); every other
    /// constant is `f32`.
    fn weight_format(&self) -> WeightFormat {
        WeightFormat::F32
    }
    /// Takes the model's weights, indexed by `ConstId`; a backend may repack or upload
    /// them and drop the originals.
    fn load_constants(&mut self, constants: Vec<Constant>) -> Result<()>;
    /// A new workspace on this backend's constants, with no buffers yet.
    fn workspace(self: Arc<Self>) -> Box<dyn Workspace>;
}

/// The buffers of one forward at a time on a backend; workspaces of one backend run
/// concurrently.
pub trait Workspace: Send {
    /// Makes room for a graph's slots (and any per-op scratch). A workspace that refuses
    /// (over its memory budget) is left ready for another graph.
    fn prepare(&mut self, graph: &Graph, plan: &Plan) -> Result<()>;
    /// Writes an input's values into its slot.
    fn write(&mut self, slot: Slot, data: &[f32]) -> Result<()>;
    /// Runs `op`, reading the slots `inputs` and writing the slots `outputs` (in the
    /// order `Op` documents). A backend may only record the op here and run it later.
    fn run(&mut self, op: &Op, inputs: &[Slot], outputs: &[Slot]) -> Result<()>;
    /// Finishes every recorded op and returns the first `len` values of each slot.
    fn read(&mut self, requests: &[(Slot, usize)]) -> Result<Vec<Vec<f32>>>;
}

/// A device a backend computes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The adapter's name, API and kind, e.g. "NVIDIA H200 (Vulkan, DiscreteGpu)".
    pub name: String,
    /// A software implementation on the CPU (such as Mesa's lavapipe): correct, but its
    /// timings are not a GPU's.
    pub software: bool,
}

/// The backends a user can ask for by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// Plain f32 reference kernels.
    Scalar,
    /// SIMD kernels (AVX-512, AVX2/FMA, NEON) with threads.
    Cpu,
    /// WGSL compute shaders through wgpu.
    Gpu,
}

impl std::str::FromStr for BackendKind {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "scalar" => Ok(Self::Scalar),
            "cpu" => Ok(Self::Cpu),
            "gpu" => Ok(Self::Gpu),
            other => Err(Error::InvalidOption(format!(
                "unknown backend \"{other}\" (expected scalar, cpu or gpu)"
            ))),
        }
    }
}

impl BackendKind {
    /// `cpu` where the kernels have a SIMD version for this CPU, else `scalar`.
    pub fn default_for_this_cpu() -> Self {
        match Isa::detect() {
            Isa::Scalar => Self::Scalar,
            _ => Self::Cpu,
        }
    }

    /// The name the CLI and `FromStr` take.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
        }
    }
}

/// Options that shape how a backend runs.
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// Worker threads for the CPU backend; `None` uses every core.
    pub threads: Option<usize>,
    /// The CPU backend's kernels; `None` takes the best this CPU runs.
    pub isa: Option<Isa>,
    /// The precision of weights and of the products that use them; `None` takes `f32`,
    /// or `int8` for a checkpoint that `vitmsn quantize` wrote.
    pub precision: Option<Precision>,
    /// The most bytes the scalar and CPU backends may allocate for a forward's
    /// activations; `None` takes [`memory::default_budget`].
    pub max_memory: Option<u64>,
}

/// The precision of weights and of the matrix products that use them. Layer norms,
/// softmax, activations and residuals stay in `f32`, and sums accumulate in `f32` (`i32`
/// for int8) whatever the precision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    /// 32-bit floats: the checkpoint's values, as transformers computes.
    F32,
    /// 16-bit floats in GPU storage (the `gpu` backend only).
    F16,
    /// bfloat16 weights, and activations rounded to bf16 where they enter a `Linear`
    /// (the `cpu` backend only): half the weight memory, and twice the arithmetic where
    /// the CPU has AVX512_BF16.
    Bf16,
    /// int8 weights (symmetric per output channel), and activations quantized to 8 bits
    /// per token where they enter a `Linear`, as ONNX Runtime's and PyTorch's dynamic
    /// quantization do (the `cpu` backend only).
    Int8,
}

impl Precision {
    /// Every precision, in the order `--help` lists them.
    pub const ALL: [Precision; 4] = [Self::F32, Self::F16, Self::Bf16, Self::Int8];

    /// The name users select it by (`--precision`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::Int8 => "int8",
        }
    }

    /// The backend a reduced precision runs on; `None` for f32, which runs on all.
    pub fn only_backend(self) -> Option<BackendKind> {
        match self {
            Self::F32 => None,
            Self::F16 => Some(BackendKind::Gpu),
            Self::Bf16 | Self::Int8 => Some(BackendKind::Cpu),
        }
    }

    /// How the `cpu` backend stores `Linear` weights in this precision.
    fn weight_format(self) -> WeightFormat {
        match self {
            Self::Bf16 => WeightFormat::Bf16,
            Self::Int8 => WeightFormat::Int8,
            Self::F32 | Self::F16 => WeightFormat::F32,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                Error::InvalidOption(format!(
                    "unknown precision \"{name}\" (expected f32, f16, bf16 or int8)"
                ))
            })
    }
}

/// Creates a backend of `kind`. The CPU backend's thread count comes from `options`, else
/// the `VITMSN_THREADS` environment variable, else the number of cores; its instruction
/// set from `options`, else `VITMSN_ISA`, else the best this CPU supports.
pub fn create(kind: BackendKind, options: &BackendOptions) -> Result<Box<dyn Backend>> {
    let precision = options.precision.unwrap_or_default();
    if let Some(only) = precision.only_backend().filter(|&only| only != kind) {
        return Err(Error::InvalidOption(format!(
            "precision {} runs on the {} backend only, not on {}",
            precision.name(),
            only.name(),
            kind.name()
        )));
    }
    match kind {
        BackendKind::Scalar => Ok(Box::new(scalar::ScalarBackend::with_budget(memory_budget(
            options,
        )))),
        BackendKind::Cpu => Ok(Box::new(
            cpu::CpuBackend::new(
                cpu_threads(options)?,
                cpu_isa(options)?,
                memory_budget(options),
            )?
            .with_weight_format(precision.weight_format()),
        )),
        #[cfg(feature = "gpu")]
        BackendKind::Gpu => Ok(Box::new(gpu::GpuBackend::new(options)?)),
        #[cfg(not(feature = "gpu"))]
        BackendKind::Gpu => Err(Error::Backend(
            "this build has no gpu backend (built without the \"gpu\" feature)".into(),
        )),
    }
}

fn memory_budget(options: &BackendOptions) -> u64 {
    options.max_memory.unwrap_or_else(memory::default_budget)
}

/// The most threads the CPU backend takes: eight per core, and at least 64. More only
/// adds threads that wait, and each one costs a stack and scratch.
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_mul(8).max(64)
}

/// The instruction set named `name` (see [`Isa::name`]).
pub fn parse_isa(name: &str) -> Result<Isa> {
    Isa::from_name(name).ok_or_else(|| {
        Error::InvalidOption(format!(
            "unknown instruction set \"{name}\" (expected one of {})",
            Isa::ALL.map(Isa::name).join(", ")
        ))
    })
}

fn cpu_isa(options: &BackendOptions) -> Result<Isa> {
    match (options.isa, std::env::var("VITMSN_ISA")) {
        (Some(isa), _) => Ok(isa),
        (None, Ok(name)) => parse_isa(&name),
        (None, Err(_)) => Ok(Isa::detect()),
    }
}

fn cpu_threads(options: &BackendOptions) -> Result<usize> {
    if let Some(threads) = options.threads {
        return Ok(threads);
    }
    match std::env::var("VITMSN_THREADS") {
        Ok(v) => v.parse::<usize>().ok().filter(|&t| t > 0).ok_or_else(|| {
            Error::InvalidOption(format!("VITMSN_THREADS={v}: expected a positive integer"))
        }),
        Err(_) => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// Refuses a thread count above [`max_threads`].
pub fn check_threads(threads: usize) -> Result<()> {
    let max = max_threads();
    if threads > max {
        return Err(Error::InvalidOption(format!(
            "{threads} threads is above the limit of {max} (eight per core, at least 64)"
        )));
    }
    Ok(())
}
