//! The reference backend: every op is the plain loop of `vitmsn_kernels::scalar`, in
//! f32 on one thread. Other backends are tested against it.

use super::host::{self, im2col_values, HostSlots};
use super::{Backend, Workspace};
use crate::error::Result;
use crate::graph::{patch_rows, Constant, Graph, Op};
use crate::plan::{Plan, Slot};
use std::sync::Arc;
use vitmsn_kernels::scalar;
use vitmsn_kernels::Epilogue;

/// The reference backend's constants.
pub struct ScalarBackend {
    constants: Vec<Constant>,
    memory_budget: u64,
}

impl ScalarBackend {
    /// A backend whose forwards may each take `memory_budget` bytes of activations.
    pub fn with_budget(memory_budget: u64) -> Self {
        Self {
            constants: Vec::new(),
            memory_budget,
        }
    }
}

/// One forward's buffers on the reference backend.
struct ScalarWorkspace {
    backend: Arc<ScalarBackend>,
    slots: HostSlots,
    /// im2col rows of the patch embedding.
    patches: Vec<f32>,
}

impl Backend for ScalarBackend {
    fn name(&self) -> &'static str {
        "scalar"
    }

    fn memory_budget(&self) -> Option<u64> {
        Some(self.memory_budget)
    }

    fn load_constants(&mut self, constants: Vec<Constant>) -> Result<()> {
        self.constants = constants;
        Ok(())
    }

    fn workspace(self: Arc<Self>) -> Box<dyn Workspace> {
        Box::new(ScalarWorkspace {
            slots: HostSlots::with_budget(self.memory_budget),
            patches: Vec::new(),
            backend: self,
        })
    }
}

impl Workspace for ScalarWorkspace {
    fn prepare(&mut self, graph: &Graph, plan: &Plan) -> Result<()> {
        self.slots.prepare(plan, im2col_values(graph))
    }

    fn write(&mut self, slot: Slot, data: &[f32]) -> Result<()> {
        self.slots.write(slot, data, &host::one_block);
        Ok(())
    }

    fn run(&mut self, op: &Op, inputs: &[Slot], outputs: &[Slot]) -> Result<()> {
        let constants = &self.backend.constants;
        let constant = |id: usize| -> &[f32] { constants[id].data.as_f32() };
        let patches = &mut self.patches;
        self.slots.run_op(inputs, outputs, |input, out| match *op {
            Op::PatchEmbed {
                batch,
                channels,
                height,
                width,
                patch,
                dim,
                weight,
                bias,
            } => {
                let (rows, k) = (
                    patch_rows(batch, height, width, patch),
                    channels * patch * patch,
                );
                patches.resize(rows * k, 0.0);
                scalar::im2col(batch, channels, height, width, patch, input.get(0), patches);
                let epilogue = Epilogue {
                    bias: Some(constant(bias)),
                    ..Epilogue::NONE
                };
                scalar::gemm(
                    rows,
                    dim,
                    k,
                    patches,
                    constant(weight),
                    &mut out[0],
                    &epilogue,
                );
            }
            Op::LayerNorm {
                rows,
                dim,
                gamma,
                beta,
                eps,
            } => {
                scalar::layer_norm(
                    dim,
                    &input.get(0)[..rows * dim],
                    constant(gamma),
                    constant(beta),
                    eps,
                    &mut out[0],
                );
            }
            Op::Linear {
                m,
                n,
                k,
                weight,
                bias,
                activation,
                residual,
            } => {
                let epilogue = Epilogue {
                    bias: bias.map(constant),
                    activation,
                    residual: residual.then(|| input.get(1)),
                };
                scalar::gemm(
                    m,
                    n,
                    k,
                    input.get(0),
                    constant(weight),
                    &mut out[0],
                    &epilogue,
                );
            }
            Op::Attention { shape, layer, .. } => {
                let head_scale = &input.get(1)[layer * shape.heads..][..shape.heads];
                let (context, probs) = out
                    .split_first_mut()
                    .expect("attention has a context output");
                let probs = probs.first_mut().map(|p| &mut p[..]);
                scalar::attention(shape, input.get(0), head_scale, context, probs);
            }
            Op::MaskBlend { .. } | Op::ClsPosition { .. } | Op::SelectCls { .. } => {
                host::run_data_movement(op, input, &mut out[0], constant, &host::one_block)
            }
        });
        Ok(())
    }

    fn read(&mut self, requests: &[(Slot, usize)]) -> Result<Vec<Vec<f32>>> {
        Ok(self.slots.read(requests))
    }
}
