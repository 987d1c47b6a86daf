//! What each op dispatches: the pipeline variant, its parameters and buffers, and the
//! workgroup grid. Everything here runs in `prepare`, once per graph.

use super::context::GpuContext;
use super::pipelines::{self, PipelineCache, ShaderVariant};
use crate::error::{Error, Result};
use crate::graph::{patch_rows, Op};
use crate::plan::Slot;
use vitmsn_kernels::{Activation, AttentionShape};
use wgpu::util::DeviceExt;

/// One recorded compute dispatch.
pub(super) struct Dispatch {
    /// The pipeline's cache key, used as the compute pass label.
    pub label: String,
    pub pipeline: wgpu::ComputePipeline,
    /// Its own uniform buffer, written once at creation: dispatches of one submission never
    /// share a uniform that is rewritten in between.
    pub bind_group: wgpu::BindGroup,
    pub grid: (u32, u32),
}

/// Workgroup size of the element-wise shaders.
const ELEMENTWISE_THREADS: usize = 256;
/// Queries per attention workgroup, one per thread.
const QUERY_TILE: usize = 64;

/// A GEMM's block per workgroup (BM × BN, BK deep) and per thread (TM × TN). Both use 256
/// threads and 16 KiB of workgroup memory, within WebGPU's default limits.
#[derive(Clone, Copy)]
struct GemmTile {
    bm: usize,
    bn: usize,
    bk: usize,
    tm: usize,
    tn: usize,
}

const SMALL_TILE: GemmTile = GemmTile {
    bm: 64,
    bn: 64,
    bk: 32,
    tm: 4,
    tn: 4,
};
const LARGE_TILE: GemmTile = GemmTile {
    bm: 128,
    bn: 128,
    bk: 16,
    tm: 8,
    tn: 8,
};
/// 128×128 blocks halve the loads per multiply-add, but only pay once there are enough of
/// them to keep every compute unit busy; below this many, 64×64 blocks spread wider.
const LARGE_TILE_MIN_BLOCKS: usize = 128;

impl GemmTile {
    fn for_output(m: usize, n: usize) -> Self {
        let large_blocks = m.div_ceil(LARGE_TILE.bm) * n.div_ceil(LARGE_TILE.bn);
        if large_blocks >= LARGE_TILE_MIN_BLOCKS {
            LARGE_TILE
        } else {
            SMALL_TILE
        }
    }
}

/// The patch grid of a patch embedding, whose GEMM gathers its rows from the pixels.
struct PatchGeometry {
    channels: usize,
    height: usize,
    width: usize,
    patch: usize,
}

/// One GEMM: `out[m, n] = act(a · weightᵀ + bias) + residual`.
struct Gemm<'b> {
    m: usize,
    n: usize,
    k: usize,
    a: &'b wgpu::Buffer,
    im2col: Option<PatchGeometry>,
    weight: &'b wgpu::Buffer,
    bias: Option<&'b wgpu::Buffer>,
    activation: Activation,
    residual: Option<&'b wgpu::Buffer>,
    out: &'b wgpu::Buffer,
}

/// Plans the dispatches of ops against the buffers of one prepared graph.
pub(super) struct Planner<'a> {
    pub ctx: &'a GpuContext,
    pub pipelines: &'a mut PipelineCache,
    pub constants: &'a [wgpu::Buffer],
    pub slots: &'a [wgpu::Buffer],
    /// Scratch for the softmax statistics of attention ops that output probabilities.
    pub attention_stats: Option<&'a wgpu::Buffer>,
}

impl Planner<'_> {
    pub fn dispatches(
        &mut self,
        op: &Op,
        inputs: &[Slot],
        outputs: &[Slot],
    ) -> Result<Vec<Dispatch>> {
        let (constants, slots) = (self.constants, self.slots);
        let input = |i: usize| &slots[inputs[i]];
        let out = &slots[outputs[0]];
        Ok(match *op {
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
                let m = patch_rows(batch, height, width, patch);
                let im2col = Some(PatchGeometry {
                    channels,
                    height,
                    width,
                    patch,
                });
                let gemm = Gemm {
                    m,
                    n: dim,
                    k: channels * patch * patch,
                    a: input(0),
                    im2col,
                    weight: &constants[weight],
                    bias: Some(&constants[bias]),
                    activation: Activation::Identity,
                    residual: None,
                    out,
                };
                vec![self.gemm(gemm)?]
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
                let gemm = Gemm {
                    m,
                    n,
                    k,
                    a: input(0),
                    im2col: None,
                    weight: &constants[weight],
                    bias: bias.map(|b| &constants[b]),
                    activation,
                    residual: residual.then(|| input(1)),
                    out,
                };
                vec![self.gemm(gemm)?]
            }
            Op::Attention {
                shape,
                layer,
                probs,
            } => {
                let probs_out = probs.then(|| &slots[outputs[1]]);
                self.attention(shape, layer, input(0), input(1), out, probs_out)?
            }
            Op::LayerNorm {
                rows,
                dim,
                gamma,
                beta,
                eps,
            } => {
                let threads = dim.next_power_of_two().clamp(32, 256);
                let variant = ShaderVariant {
                    source: pipelines::LAYERNORM,
                    entry: "layer_norm",
                    tag: format!("t{threads}"),
                    constants: &[("THREADS", format!("{threads}u"))],
                    flags: &[],
                };
                let params = [rows as u32, dim as u32, eps.to_bits()];
                let buffers = [
                    (1, input(0)),
                    (2, &constants[gamma]),
                    (3, &constants[beta]),
                    (4, out),
                ];
                vec![self.dispatch(&variant, &params, &buffers, rows)?]
            }
            Op::MaskBlend {
                rows,
                dim,
                mask_token,
            } => {
                let buffers = [
                    (1, input(0)),
                    (2, input(1)),
                    (3, &constants[mask_token]),
                    (6, out),
                ];
                vec![self.elementwise("mask_blend", rows * dim, dim, 0, &buffers)?]
            }
            Op::ClsPosition {
                batch,
                patches,
                dim,
                cls,
            } => {
                let buffers = [(1, input(0)), (4, &constants[cls]), (5, input(1)), (6, out)];
                vec![self.elementwise(
                    "cls_position",
                    batch * (patches + 1) * dim,
                    dim,
                    patches + 1,
                    &buffers,
                )?]
            }
            Op::SelectCls { batch, tokens, dim } => {
                vec![self.elementwise(
                    "select_cls",
                    batch * dim,
                    dim,
                    tokens,
                    &[(1, input(0)), (6, out)],
                )?]
            }
        })
    }

    fn gemm(&mut self, g: Gemm) -> Result<Dispatch> {
        let tile = GemmTile::for_output(g.m, g.n);
        // Rows are read as vec4 when every 4-element step along k stays in one row and is
        // 4-aligned; for gathered patches that also needs patch rows of whole vec4s.
        let vec4_w = g.k.is_multiple_of(4);
        let vec4_a = match &g.im2col {
            Some(geometry) => geometry.patch.is_multiple_of(4) && geometry.width.is_multiple_of(4),
            None => vec4_w,
        };
        let mut flags = Vec::new();
        let mut tag = format!(
            "{}x{}x{}_{}x{}",
            tile.bm, tile.bn, tile.bk, tile.tm, tile.tn
        );
        let present = [
            (g.im2col.is_some(), "IM2COL"),
            (vec4_a, "VEC4_A"),
            (vec4_w, "VEC4_W"),
            (g.bias.is_some(), "BIAS"),
            (g.residual.is_some(), "RESIDUAL"),
        ];
        for (_, flag) in present.into_iter().filter(|(on, _)| *on) {
            flags.push(flag);
            tag = format!("{tag}_{}", flag.to_lowercase());
        }
        let activation = activation_name(g.activation);
        if g.activation != Activation::Identity {
            tag = format!("{tag}_{activation}");
        }
        let constants = [
            ("BM", format!("{}u", tile.bm)),
            ("BN", format!("{}u", tile.bn)),
            ("BK", format!("{}u", tile.bk)),
            ("TM", format!("{}u", tile.tm)),
            ("TN", format!("{}u", tile.tn)),
            ("ACTIVATION", format!("ACT_{}", activation.to_uppercase())),
        ];
        let variant = ShaderVariant {
            source: pipelines::GEMM,
            entry: "gemm",
            tag,
            constants: &constants,
            flags: &flags,
        };
        let geometry = g.im2col.as_ref().map_or([0; 6], |p| {
            [
                p.channels,
                p.height,
                p.width,
                p.patch,
                p.height / p.patch,
                p.width / p.patch,
            ]
        });
        let params: Vec<u32> = [g.m, g.n, g.k]
            .iter()
            .chain(&geometry)
            .map(|&v| v as u32)
            .collect();
        let mut buffers = vec![(1, g.a), (2, g.weight), (3, g.out)];
        buffers.extend(g.bias.map(|b| (4, b)));
        buffers.extend(g.residual.map(|r| (5, r)));
        let blocks = g.m.div_ceil(tile.bm) * g.n.div_ceil(tile.bn);
        self.dispatch(&variant, &params, &buffers, blocks)
    }

    fn attention(
        &mut self,
        shape: AttentionShape,
        layer: usize,
        qkv: &wgpu::Buffer,
        head_mask: &wgpu::Buffer,
        context: &wgpu::Buffer,
        probs: Option<&wgpu::Buffer>,
    ) -> Result<Vec<Dispatch>> {
        let AttentionShape {
            batch,
            tokens,
            heads,
            head_dim,
        } = shape;
        // Keys and values of one tile, in f32, must fit the workgroup memory.
        let kv_tile = (self.ctx.limits.max_compute_workgroup_storage_size as usize
            / (2 * 4 * head_dim))
            .min(32);
        if kv_tile == 0 {
            return Err(Error::Backend(format!(
                "attention head size {head_dim} is too large for this GPU's workgroup memory"
            )));
        }
        let constants = [
            ("HEAD_DIM", format!("{head_dim}u")),
            ("KV_TILE", format!("{kv_tile}u")),
            ("QUERY_TILE", format!("{QUERY_TILE}u")),
            ("SCALE", format!("{:?}f", 1.0 / (head_dim as f32).sqrt())),
        ];
        let stats_flag: &[&str] = if probs.is_some() { &["STATS"] } else { &[] };
        let tag = format!(
            "hd{head_dim}_kv{kv_tile}{}",
            if probs.is_some() { "_stats" } else { "" }
        );
        let params = [batch, tokens, heads, layer].map(|v| v as u32);
        let variant = ShaderVariant {
            source: pipelines::ATTENTION,
            entry: "attention",
            tag: tag.clone(),
            constants: &constants,
            flags: stats_flag,
        };
        let mut buffers = vec![(1, qkv), (2, head_mask), (3, context)];
        let Some(probs) = probs else {
            return Ok(vec![self.dispatch(
                &variant,
                &params,
                &buffers,
                batch * heads * tokens.div_ceil(QUERY_TILE),
            )?]);
        };
        let stats = self
            .attention_stats
            .expect("prepare sizes the statistics scratch for every attention with probabilities");
        buffers.push((4, stats));
        let flash = self.dispatch(
            &variant,
            &params,
            &buffers,
            batch * heads * tokens.div_ceil(QUERY_TILE),
        )?;
        let variant = ShaderVariant {
            entry: "attention_probs",
            ..variant
        };
        let buffers = [(1, qkv), (2, head_mask), (4, stats), (5, probs)];
        Ok(vec![
            flash,
            self.dispatch(&variant, &params, &buffers, batch * heads * tokens)?,
        ])
    }

    /// One of embed.wgsl's entry points over `total` output elements.
    fn elementwise(
        &mut self,
        entry: &'static str,
        total: usize,
        dim: usize,
        tokens: usize,
        buffers: &[(u32, &wgpu::Buffer)],
    ) -> Result<Dispatch> {
        let constants = [("THREADS", format!("{ELEMENTWISE_THREADS}u"))];
        let variant = ShaderVariant {
            source: pipelines::EMBED,
            entry,
            tag: String::new(),
            constants: &constants,
            flags: &[],
        };
        let params = [total, dim, tokens].map(|v| v as u32);
        self.dispatch(
            &variant,
            &params,
            buffers,
            total.div_ceil(ELEMENTWISE_THREADS),
        )
    }

    /// A dispatch of `groups` workgroups of `variant`, with `params` as its uniform
    /// (binding 0) and `buffers` at their bindings.
    fn dispatch(
        &mut self,
        variant: &ShaderVariant,
        params: &[u32],
        buffers: &[(u32, &wgpu::Buffer)],
        groups: usize,
    ) -> Result<Dispatch> {
        let device = &self.ctx.device;
        let (pipeline, label) = self.pipelines.get(device, variant)?;
        let mut words = params.to_vec();
        // Uniform structs are sized in multiples of 16 bytes.
        words.resize(params.len().next_multiple_of(4), 0);
        let uniform = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(&label),
            contents: bytemuck::cast_slice(&words),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let entries: Vec<wgpu::BindGroupEntry> = std::iter::once((0, &uniform))
            .chain(buffers.iter().copied())
            .map(|(binding, buffer)| wgpu::BindGroupEntry {
                binding,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Ok(Dispatch {
            label,
            pipeline,
            bind_group,
            grid: self.ctx.grid(groups)?,
        })
    }
}

/// The activation's name in pipeline keys; gemm.wgsl names it `ACT_` and the name in capitals.
fn activation_name(activation: Activation) -> &'static str {
    match activation {
        Activation::Identity => "identity",
        Activation::Gelu => "gelu",
        Activation::GeluTanh => "gelu_tanh",
        Activation::GeluFast => "gelu_fast",
        Activation::QuickGelu => "quick_gelu",
        Activation::Relu => "relu",
        Activation::Relu6 => "relu6",
        Activation::Relu2 => "relu2",
        Activation::LeakyRelu => "leaky_relu",
        Activation::Selu => "selu",
        Activation::Silu => "silu",
        Activation::Mish => "mish",
        Activation::Tanh => "tanh",
        Activation::Sigmoid => "sigmoid",
    }
}
