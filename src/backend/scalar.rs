//! The reference backend: every op is the plain loop of `vitmsn_kernels::scalar`, in
//! f32 on one thread. Other backends are tested against it.

use super::Backend;
use crate::error::Result;
use crate::executor::{Plan, Slot};
use crate::graph::{Constant, Graph, Op};
use vitmsn_kernels::scalar;
use vitmsn_kernels::{AttentionShape, Epilogue};

#[derive(Default)]
pub struct ScalarBackend {
    constants: Vec<Constant>,
    slots: Vec<Vec<f32>>,
    /// im2col rows of the patch embedding.
    patches: Vec<f32>,
}

impl ScalarBackend {
    fn constant(&self, id: usize) -> &[f32] {
        &self.constants[id].data
    }
}

impl Backend for ScalarBackend {
    fn name(&self) -> &'static str {
        "scalar"
    }

    fn load_constants(&mut self, constants: Vec<Constant>) -> Result<()> {
        self.constants = constants;
        Ok(())
    }

    fn prepare(&mut self, _graph: &Graph, plan: &Plan) -> Result<()> {
        self.slots = plan.slot_sizes.iter().map(|&n| vec![0.0; n]).collect();
        Ok(())
    }

    fn write(&mut self, slot: Slot, data: &[f32]) -> Result<()> {
        self.slots[slot][..data.len()].copy_from_slice(data);
        Ok(())
    }

    fn run(&mut self, op: &Op, inputs: &[Slot], outputs: &[Slot]) -> Result<()> {
        // The output buffer is taken out while the op runs so inputs can be borrowed;
        // the plan guarantees it is none of them.
        let mut out = std::mem::take(&mut self.slots[outputs[0]]);
        let mut second_out = outputs.get(1).map(|&s| std::mem::take(&mut self.slots[s]));
        let input = |i: usize| self.slots[inputs[i]].as_slice();
        match *op {
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
                    batch * (height / patch) * (width / patch),
                    channels * patch * patch,
                );
                let mut patches = std::mem::take(&mut self.patches);
                patches.resize(rows * k, 0.0);
                scalar::im2col(
                    batch,
                    channels,
                    height,
                    width,
                    patch,
                    input(0),
                    &mut patches,
                );
                let epilogue = Epilogue {
                    bias: Some(self.constant(bias)),
                    ..Epilogue::NONE
                };
                scalar::gemm(
                    rows,
                    dim,
                    k,
                    &patches,
                    self.constant(weight),
                    &mut out,
                    &epilogue,
                );
                self.patches = patches;
            }
            Op::MaskBlend {
                rows,
                dim,
                mask_token,
            } => {
                scalar::mask_blend(
                    dim,
                    &input(0)[..rows * dim],
                    input(1),
                    self.constant(mask_token),
                    &mut out,
                );
            }
            Op::ClsPosition {
                batch,
                patches,
                dim,
                cls,
            } => {
                scalar::cls_and_position(
                    batch,
                    patches,
                    dim,
                    input(0),
                    self.constant(cls),
                    input(1),
                    &mut out,
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
                    &input(0)[..rows * dim],
                    self.constant(gamma),
                    self.constant(beta),
                    eps,
                    &mut out,
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
                    bias: bias.map(|b| self.constant(b)),
                    activation,
                    residual: residual.then(|| input(1)),
                };
                scalar::gemm(
                    m,
                    n,
                    k,
                    input(0),
                    self.constant(weight),
                    &mut out,
                    &epilogue,
                );
            }
            Op::Attention {
                shape,
                layer,
                probs,
            } => {
                let AttentionShape { heads, .. } = shape;
                let head_scale = &input(1)[layer * heads..(layer + 1) * heads];
                debug_assert_eq!(probs, second_out.is_some());
                scalar::attention(
                    shape,
                    input(0),
                    head_scale,
                    &mut out,
                    second_out.as_deref_mut(),
                );
            }
            Op::SelectCls { batch, tokens, dim } => {
                scalar::select_cls(batch, tokens, dim, input(0), &mut out);
            }
        }
        self.slots[outputs[0]] = out;
        if let Some(second) = second_out {
            self.slots[outputs[1]] = second;
        }
        Ok(())
    }

    fn read(&mut self, requests: &[(Slot, usize)]) -> Result<Vec<Vec<f32>>> {
        Ok(requests
            .iter()
            .map(|&(slot, len)| self.slots[slot][..len].to_vec())
            .collect())
    }
}
