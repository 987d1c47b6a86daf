//! The GPU backend: WGSL compute shaders through wgpu (Vulkan, Metal, DX12).
//!
//! `prepare` allocates the slot buffers and builds every node's dispatches (pipelines,
//! uniforms, bind groups); `run` only records them into one command encoder; `read`
//! submits that encoder together with copies of the requested slots into staging buffers,
//! so a forward is one submission. See docs/gpu.md.

mod context;
mod ops;
mod pipelines;
mod storage;

use super::{Backend, BackendOptions, Precision, Workspace};
use crate::error::{Error, Result};
use crate::graph::{Constant, Graph, Op};
use crate::plan::{Plan, Slot};
use context::GpuContext;
use ops::{Dispatch, Planner};
use pipelines::PipelineCache;
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// The device, the pipelines built so far and the constants' buffers, which the workspaces
/// share.
pub struct GpuBackend {
    ctx: GpuContext,
    precision: Precision,
    pipelines: Mutex<PipelineCache>,
    constants: Vec<wgpu::Buffer>,
}

/// One forward's buffers and recorded dispatches on the GPU.
struct GpuWorkspace {
    backend: Arc<GpuBackend>,
    slots: Vec<wgpu::Buffer>,
    /// Softmax statistics of the attention ops that output probabilities.
    attention_stats: Option<wgpu::Buffer>,
    nodes: Vec<PreparedNode>,
    /// The node `run` expects next.
    next_node: usize,
    /// The forward being recorded, submitted by `read`.
    encoder: Option<wgpu::CommandEncoder>,
    /// Readback buffers, one per requested output, kept across forwards.
    staging: Vec<wgpu::Buffer>,
}

/// A graph node with its dispatches built.
struct PreparedNode {
    op: Op,
    inputs: Vec<Slot>,
    outputs: Vec<Slot>,
    dispatches: Vec<Dispatch>,
}

impl GpuBackend {
    pub fn new(options: &BackendOptions) -> Result<Self> {
        let precision = options.precision.unwrap_or_default();
        let ctx = GpuContext::new(precision)?;
        Ok(Self {
            ctx,
            precision,
            pipelines: Mutex::new(PipelineCache::new(precision)),
            constants: Vec::new(),
        })
    }

    /// Fails when a buffer of `bytes` cannot be bound as one storage buffer here.
    fn check_binding_size(&self, what: &str, bytes: u64) -> Result<()> {
        let limits = &self.ctx.limits;
        // Shaders index elements with u32, so 4 GiB is a hard cap whatever the adapter allows.
        let max = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(u32::MAX as u64);
        if bytes > max {
            return Err(Error::Backend(format!(
                "{what} needs {} MiB, over the {} MiB a storage buffer may hold on {}; use a smaller batch",
                bytes >> 20,
                max >> 20,
                self.ctx.adapter_name
            )));
        }
        Ok(())
    }

    /// A storage buffer of at least `bytes`: `current` if it is large enough.
    fn reuse_or_create(
        &self,
        current: Option<wgpu::Buffer>,
        bytes: u64,
        label: &str,
    ) -> wgpu::Buffer {
        match current {
            Some(buffer) if buffer.size() >= bytes => buffer,
            _ => self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
        }
    }
}

impl Backend for GpuBackend {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn device(&self) -> Option<super::Device> {
        Some(super::Device {
            name: self.ctx.adapter_name.clone(),
            software: self.ctx.software,
        })
    }

    /// Ops are recorded in `run` and submitted together in `read`.
    fn runs_ops_when_called(&self) -> bool {
        false
    }

    fn load_constants(&mut self, constants: Vec<Constant>) -> Result<()> {
        let mut buffers = Vec::with_capacity(constants.len());
        for constant in &constants {
            self.check_binding_size(
                &constant.name,
                storage::buffer_bytes(self.precision, constant.data.as_f32().len()),
            )?;
            let mut contents = storage::encode(self.precision, constant.data.as_f32());
            contents.resize(
                storage::buffer_bytes(self.precision, constant.data.as_f32().len()) as usize,
                0,
            );
            buffers.push(
                self.ctx
                    .device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(&constant.name),
                        contents: &contents,
                        usage: wgpu::BufferUsages::STORAGE,
                    }),
            );
        }
        self.constants = buffers;
        self.ctx.check()
    }

    fn workspace(self: Arc<Self>) -> Box<dyn Workspace> {
        Box::new(GpuWorkspace {
            backend: self,
            slots: Vec::new(),
            attention_stats: None,
            nodes: Vec::new(),
            next_node: 0,
            encoder: None,
            staging: Vec::new(),
        })
    }
}

impl Workspace for GpuWorkspace {
    fn prepare(&mut self, graph: &Graph, plan: &Plan) -> Result<()> {
        self.encoder = None;
        self.next_node = 0;
        self.nodes.clear();
        let mut slots = std::mem::take(&mut self.slots).into_iter();
        let mut prepared_slots = Vec::with_capacity(plan.slot_sizes.len());
        for (slot, &len) in plan.slot_sizes.iter().enumerate() {
            let bytes = storage::buffer_bytes(self.backend.precision, len);
            self.backend
                .check_binding_size(&format!("slot {slot}"), bytes)?;
            prepared_slots.push(self.backend.reuse_or_create(
                slots.next(),
                bytes,
                &format!("slot {slot}"),
            ));
        }
        self.slots = prepared_slots;
        let stats_bytes = graph
            .nodes
            .iter()
            .filter_map(|node| match node.op {
                Op::Attention {
                    shape, probs: true, ..
                } => Some(shape.batch * shape.heads * shape.tokens * 8),
                _ => None,
            })
            .max();
        self.attention_stats = match stats_bytes {
            Some(bytes) => {
                self.backend
                    .check_binding_size("attention statistics", bytes as u64)?;
                let current = self.attention_stats.take();
                Some(
                    self.backend
                        .reuse_or_create(current, bytes as u64, "attention statistics"),
                )
            }
            None => None,
        };
        let backend = &self.backend;
        let mut pipelines = backend
            .pipelines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut planner = Planner {
            ctx: &backend.ctx,
            pipelines: &mut pipelines,
            constants: &backend.constants,
            slots: &self.slots,
            attention_stats: self.attention_stats.as_ref(),
        };
        let mut nodes = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let inputs: Vec<Slot> = node.inputs.iter().map(|&v| plan.slot_of[v]).collect();
            let outputs: Vec<Slot> = node.outputs.iter().map(|&v| plan.slot_of[v]).collect();
            let dispatches = planner.dispatches(&node.op, &inputs, &outputs)?;
            nodes.push(PreparedNode {
                op: node.op.clone(),
                inputs,
                outputs,
                dispatches,
            });
        }
        self.nodes = nodes;
        self.backend.ctx.check()
    }

    fn write(&mut self, slot: Slot, data: &[f32]) -> Result<()> {
        self.backend.ctx.queue.write_buffer(
            &self.slots[slot],
            0,
            &storage::encode(self.backend.precision, data),
        );
        Ok(())
    }

    fn run(&mut self, op: &Op, inputs: &[Slot], outputs: &[Slot]) -> Result<()> {
        let node = self
            .nodes
            .get(self.next_node)
            .filter(|node| node.op == *op && node.inputs == inputs && node.outputs == outputs)
            .ok_or_else(|| {
                Error::Backend(format!(
                    "op {} is not the one prepared: {op:?}",
                    self.next_node
                ))
            })?;
        let device = &self.backend.ctx.device;
        let encoder = self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("forward"),
            })
        });
        for dispatch in &node.dispatches {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&dispatch.label),
                timestamp_writes: None,
            });
            pass.set_pipeline(&dispatch.pipeline);
            pass.set_bind_group(0, &dispatch.bind_group, &[]);
            pass.dispatch_workgroups(dispatch.grid.0, dispatch.grid.1, 1);
        }
        self.next_node += 1;
        Ok(())
    }

    fn read(&mut self, requests: &[(Slot, usize)]) -> Result<Vec<Vec<f32>>> {
        self.next_node = 0;
        let device = &self.backend.ctx.device;
        let mut encoder = self.encoder.take().unwrap_or_else(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("forward"),
            })
        });
        let sizes: Vec<u64> = requests
            .iter()
            .map(|&(_, len)| storage::copy_bytes(self.backend.precision, len))
            .collect();
        for (i, (&(slot, _), &bytes)) in requests.iter().zip(&sizes).enumerate() {
            if self.staging.get(i).is_none_or(|b| b.size() < bytes) {
                let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                match self.staging.get_mut(i) {
                    Some(old) => *old = buffer,
                    None => self.staging.push(buffer),
                }
            }
            encoder.copy_buffer_to_buffer(&self.slots[slot], 0, &self.staging[i], 0, bytes);
        }
        let submission = self.backend.ctx.queue.submit([encoder.finish()]);
        let (sender, mapped) = std::sync::mpsc::channel();
        for (buffer, &bytes) in self.staging.iter().zip(&sizes) {
            let sender = sender.clone();
            buffer
                .slice(..bytes)
                .map_async(wgpu::MapMode::Read, move |result| {
                    // The receiver outlives the poll below; a send can only fail after an
                    // earlier error already returned.
                    let _ = sender.send(result);
                });
        }
        device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: None,
            })
            .map_err(|e| {
                Error::Backend(format!(
                    "{}: waiting for the forward: {e}",
                    self.backend.ctx.adapter_name
                ))
            })?;
        self.backend.ctx.check()?;
        for _ in &sizes {
            mapped
                .recv()
                .map_err(|_| Error::Backend("a readback was dropped unmapped".into()))?
                .map_err(|e| {
                    Error::Backend(format!(
                        "{}: reading back: {e}",
                        self.backend.ctx.adapter_name
                    ))
                })?;
        }
        let mut results = Vec::with_capacity(requests.len());
        for ((buffer, &bytes), &(_, len)) in self.staging.iter().zip(&sizes).zip(requests) {
            let view = buffer.slice(..bytes).get_mapped_range().map_err(|e| {
                Error::Backend(format!(
                    "{}: reading back: {e}",
                    self.backend.ctx.adapter_name
                ))
            })?;
            results.push(storage::decode(self.backend.precision, &view, len));
            drop(view);
            buffer.unmap();
        }
        Ok(results)
    }
}
