//! Slot buffers in host memory, shared by the CPU-side backends.

use super::memory;
use crate::error::Result;
use crate::graph::{ConstId, Graph, Op};
use crate::plan::{Plan, Slot};
use vitmsn_kernels::aligned::AlignedVec;
use vitmsn_kernels::scalar;
use vitmsn_kernels::threads::RowBlockFn;

/// How a CPU-side backend runs an op that only moves data: `split(out, row_len, f)` runs
/// `f(first_row, block)` on blocks of whole `row_len`-element rows that together cover
/// `out`, on one thread ([`one_block`]) or spread over a pool.
pub type SplitRows<'a> = &'a dyn Fn(&mut [f32], usize, &RowBlockFn);

/// [`SplitRows`] on the calling thread: all of `out` as one block.
pub fn one_block(out: &mut [f32], _row_len: usize, f: &RowBlockFn) {
    f(0, out)
}

/// One buffer per plan slot, each starting on a cache line, within a memory budget.
pub struct HostSlots {
    slots: Vec<AlignedVec>,
    budget: u64,
}

/// The input slots of one op, read while its outputs are taken out.
pub struct OpInputs<'a> {
    slots: &'a [AlignedVec],
    inputs: &'a [Slot],
}

impl OpInputs<'_> {
    /// The buffer of the op's `i`-th input (may be longer than the value).
    pub fn get(&self, i: usize) -> &[f32] {
        &self.slots[self.inputs[i]]
    }
}

impl HostSlots {
    /// No slots yet; `budget` bounds the bytes of slots and scratch a graph may take.
    pub fn with_budget(budget: u64) -> Self {
        Self {
            slots: Vec::new(),
            budget,
        }
    }

    /// Sizes the slots for `plan`, keeping allocations that are already large enough,
    /// after checking that they and `scratch_values` more f32 values fit the budget.
    /// When they do not, nothing is changed.
    pub fn prepare(&mut self, plan: &Plan, scratch_values: usize) -> Result<()> {
        let values = plan
            .slot_sizes
            .iter()
            .fold(scratch_values as u64, |sum, &size| {
                sum.saturating_add(size as u64)
            });
        memory::check(values.saturating_mul(4), self.budget)?;
        self.slots
            .resize_with(plan.slot_sizes.len(), AlignedVec::default);
        for (slot, &size) in self.slots.iter_mut().zip(&plan.slot_sizes) {
            slot.resize(size);
        }
        Ok(())
    }

    pub fn write(&mut self, slot: Slot, data: &[f32], split: SplitRows) {
        split(&mut self.slots[slot][..data.len()], 1, &|first, block| {
            block.copy_from_slice(&data[first..][..block.len()])
        });
    }

    pub fn read(&self, requests: &[(Slot, usize)]) -> Vec<Vec<f32>> {
        requests
            .iter()
            .map(|&(slot, len)| self.slots[slot][..len].to_vec())
            .collect()
    }

    /// Runs `op` with the output buffers taken out of their slots (at most two), so the
    /// inputs can be borrowed at the same time; the plan guarantees none is an input.
    pub fn run_op<R>(
        &mut self,
        inputs: &[Slot],
        outputs: &[Slot],
        op: impl FnOnce(&OpInputs, &mut [AlignedVec]) -> R,
    ) -> R {
        let mut taken = [AlignedVec::default(), AlignedVec::default()];
        for (buffer, &slot) in taken.iter_mut().zip(outputs) {
            *buffer = std::mem::take(&mut self.slots[slot]);
        }
        let result = op(
            &OpInputs {
                slots: &self.slots,
                inputs,
            },
            &mut taken[..outputs.len()],
        );
        for (buffer, &slot) in taken.into_iter().zip(outputs) {
            self.slots[slot] = buffer;
        }
        result
    }
}

/// Runs the data-movement ops (`MaskBlend`, `ClsPosition`, `SelectCls`) of every
/// CPU-side backend, each block of rows that `split` hands out by the reference loops.
/// `constant` reads a constant's values.
pub fn run_data_movement<'c>(
    op: &Op,
    input: &OpInputs,
    out: &mut [f32],
    constant: impl Fn(ConstId) -> &'c [f32] + Sync,
    split: SplitRows,
) {
    match *op {
        Op::MaskBlend {
            rows,
            dim,
            mask_token,
        } => {
            let (embeddings, mask) = (input.get(0), input.get(1));
            split(&mut out[..rows * dim], dim, &|first, block| {
                let embeddings = &embeddings[first * dim..][..block.len()];
                scalar::mask_blend(dim, embeddings, &mask[first..], constant(mask_token), block)
            });
        }
        Op::ClsPosition {
            batch,
            patches,
            dim,
            cls,
        } => {
            let (embeddings, position) = (input.get(0), input.get(1));
            split(
                &mut out[..batch * (patches + 1) * dim],
                dim,
                &|first, block| {
                    scalar::cls_and_position_rows(
                        patches,
                        dim,
                        embeddings,
                        constant(cls),
                        position,
                        first,
                        block,
                    )
                },
            );
        }
        Op::SelectCls { batch, tokens, dim } => {
            scalar::select_cls(batch, tokens, dim, input.get(0), out)
        }
        _ => unreachable!("{op:?} is not a data-movement op"),
    }
}

/// The values of the patch embedding's im2col rows in `graph`, which the CPU-side
/// backends hold beside the slots.
pub fn im2col_values(graph: &Graph) -> usize {
    graph
        .nodes
        .iter()
        .map(|node| match node.op {
            Op::PatchEmbed {
                batch,
                channels,
                height,
                width,
                patch,
                ..
            } => batch * (height / patch) * (width / patch) * channels * patch * patch,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}
