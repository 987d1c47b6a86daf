//! The SIMD backend: the kernels of `vitmsn_kernels` for one instruction set (by default
//! the best this CPU runs: AVX-512, AVX2/FMA, NEON, or the portable fallback), threaded
//! over one persistent pool.
//! Linear weights are packed for the GEMM micro-kernel at load and the originals dropped.

use super::host::{self, HostSlots};
use super::{Backend, Precision, Workspace};
use crate::error::{Error, Result};
use crate::graph::{patch_rows, ConstData, ConstRole, Constant, Graph, Op};
use crate::plan::{Plan, Slot};
use std::sync::Arc;
use vitmsn_kernels::attention::{self, AttentionScratch};
use vitmsn_kernels::gemm::{gemm_packed, PackedWeights, WeightFormat};
use vitmsn_kernels::threads::{RowBlockFn, ThreadPool};
use vitmsn_kernels::{norm, scalar, Epilogue, Isa};

/// A constant as the kernels read it.
enum CpuConstant {
    Packed(PackedWeights),
    Values(Vec<f32>),
}

/// The SIMD backend's constants and thread pool, which its workspaces share: their ops
/// take turns on the pool.
pub struct CpuBackend {
    isa: Isa,
    weight_format: WeightFormat,
    pool: ThreadPool,
    constants: Vec<CpuConstant>,
    memory_budget: u64,
}

/// One forward's buffers on the SIMD backend.
struct CpuWorkspace {
    backend: Arc<CpuBackend>,
    slots: HostSlots,
    /// im2col rows of the patch embedding.
    patches: Vec<f32>,
    attention: AttentionScratch,
}

impl CpuBackend {
    /// A backend on `threads` threads with `isa`'s kernels, if this CPU runs them, whose
    /// forwards may take `memory_budget` bytes of activations. A thread count above
    /// [`super::max_threads`] is refused.
    pub fn new(threads: usize, isa: Isa, memory_budget: u64) -> Result<Self> {
        super::check_threads(threads)?;
        if !isa.is_supported() {
            let capped = std::env::var("VITMSN_MAX_ISA")
                .map(|max| format!(" (VITMSN_MAX_ISA={max} allows none above it)"))
                .unwrap_or_default();
            return Err(Error::Backend(format!(
                "this CPU cannot run the {} kernels{capped}",
                isa.name()
            )));
        }
        let pool = ThreadPool::try_new(threads)
            .map_err(|e| Error::Backend(format!("cannot start {threads} CPU threads: {e}")))?;
        Ok(Self {
            isa,
            weight_format: WeightFormat::F32,
            pool,
            constants: Vec::new(),
            memory_budget,
        })
    }
}

impl CpuBackend {
    /// The backend with its `Linear` weights stored (and multiplied) in `format`.
    pub fn with_weight_format(mut self, format: WeightFormat) -> Self {
        self.weight_format = format;
        self
    }
}

/// [`host::SplitRows`] over `pool`'s threads.
fn split_over(pool: &ThreadPool) -> impl Fn(&mut [f32], usize, &RowBlockFn) + '_ {
    |out, row_len, f| pool.split_rows(out, row_len, f)
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn threads(&self) -> usize {
        self.pool.threads()
    }

    fn isa(&self) -> Option<Isa> {
        Some(self.isa)
    }

    fn memory_budget(&self) -> Option<u64> {
        Some(self.memory_budget)
    }

    fn weight_format(&self) -> WeightFormat {
        self.weight_format
    }

    fn precision(&self) -> Precision {
        match self.weight_format {
            WeightFormat::F32 => Precision::F32,
            WeightFormat::Bf16 => Precision::Bf16,
            WeightFormat::Int8 => Precision::Int8,
        }
    }

    fn load_constants(&mut self, constants: Vec<Constant>) -> Result<()> {
        // Each original is dropped as soon as its packed copy exists, so the weights are
        // never resident twice.
        let isa = self.isa;
        self.constants = constants
            .into_iter()
            .map(|c| match (c.role, c.data) {
                (ConstRole::LinearWeight { n, k }, ConstData::F32(w)) => {
                    CpuConstant::Packed(PackedWeights::new(isa, n, k, &w))
                }
                (ConstRole::LinearWeight { n, k }, ConstData::Bf16(w)) => {
                    CpuConstant::Packed(PackedWeights::from_bf16(isa, n, k, &w))
                }
                (ConstRole::LinearWeight { n, k }, ConstData::Int8 { values, scales }) => {
                    CpuConstant::Packed(PackedWeights::from_int8(isa, n, k, &values, &scales))
                }
                (ConstRole::Vector, data) => CpuConstant::Values(data.into_f32()),
            })
            .collect();
        Ok(())
    }

    fn workspace(self: Arc<Self>) -> Box<dyn Workspace> {
        Box::new(CpuWorkspace {
            slots: HostSlots::with_budget(self.memory_budget),
            patches: Vec::new(),
            attention: AttentionScratch::default(),
            backend: self,
        })
    }
}

impl Workspace for CpuWorkspace {
    fn prepare(&mut self, graph: &Graph, plan: &Plan) -> Result<()> {
        self.slots.prepare(plan, host::im2col_values(graph))?;
        for node in &graph.nodes {
            match node.op {
                Op::PatchEmbed {
                    batch,
                    channels,
                    height,
                    width,
                    patch,
                    ..
                } => {
                    self.patches.resize(
                        patch_rows(batch, height, width, patch) * channels * patch * patch,
                        0.0,
                    );
                }
                Op::Attention { shape, .. } => {
                    self.attention = AttentionScratch::new(shape, self.backend.pool.threads())
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn write(&mut self, slot: Slot, data: &[f32]) -> Result<()> {
        self.slots
            .write(slot, data, &split_over(&self.backend.pool));
        Ok(())
    }

    fn run(&mut self, op: &Op, inputs: &[Slot], outputs: &[Slot]) -> Result<()> {
        let (isa, pool) = (self.backend.isa, &self.backend.pool);
        let constants = &self.backend.constants;
        let values = |id: usize| -> &[f32] {
            match &constants[id] {
                CpuConstant::Values(v) => v,
                CpuConstant::Packed(_) => unreachable!("constant {id} is a packed weight"),
            }
        };
        let packed = |id: usize| match &constants[id] {
            CpuConstant::Packed(w) => w,
            CpuConstant::Values(_) => unreachable!("constant {id} is not a linear weight"),
        };
        let (patches, attention_scratch) = (&mut self.patches, &mut self.attention);
        self.slots.run_op(inputs, outputs, |input, out| match *op {
            Op::PatchEmbed {
                batch,
                channels,
                height,
                width,
                patch,
                weight,
                bias,
                ..
            } => {
                let rows = patch_rows(batch, height, width, patch);
                let row_len = channels * patch * patch;
                let pixels = input.get(0);
                pool.split_rows(&mut patches[..rows * row_len], row_len, &|first, block| {
                    scalar::im2col_rows(channels, height, width, patch, pixels, first, block)
                });
                let epilogue = Epilogue {
                    bias: Some(values(bias)),
                    ..Epilogue::NONE
                };
                gemm_packed(rows, patches, packed(weight), &mut out[0], &epilogue, pool);
            }
            Op::LayerNorm {
                rows,
                dim,
                gamma,
                beta,
                eps,
            } => {
                let x = &input.get(0)[..rows * dim];
                norm::layer_norm(
                    isa,
                    dim,
                    x,
                    values(gamma),
                    values(beta),
                    eps,
                    &mut out[0],
                    pool,
                );
            }
            Op::Linear {
                m,
                weight,
                bias,
                activation,
                residual,
                ..
            } => {
                let epilogue = Epilogue {
                    bias: bias.map(values),
                    activation,
                    residual: residual.then(|| input.get(1)),
                };
                gemm_packed(
                    m,
                    input.get(0),
                    packed(weight),
                    &mut out[0],
                    &epilogue,
                    pool,
                );
            }
            Op::Attention { shape, layer, .. } => {
                let head_scale = &input.get(1)[layer * shape.heads..][..shape.heads];
                let (context, probs) = out
                    .split_first_mut()
                    .expect("attention has a context output");
                let probs = probs.first_mut().map(|p| &mut p[..]);
                attention::attention(
                    isa,
                    shape,
                    input.get(0),
                    head_scale,
                    context,
                    probs,
                    pool,
                    attention_scratch,
                );
            }
            Op::MaskBlend { .. } | Op::ClsPosition { .. } | Op::SelectCls { .. } => {
                host::run_data_movement(op, input, &mut out[0], values, &split_over(pool))
            }
        });
        Ok(())
    }

    fn read(&mut self, requests: &[(Slot, usize)]) -> Result<Vec<Vec<f32>>> {
        Ok(self.slots.read(requests))
    }
}
