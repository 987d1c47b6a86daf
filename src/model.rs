//! ViTMSN, read like transformers' `modeling_vit_msn.py`: each module loads its weights
//! under transformers' names and its `forward` adds its ops to the graph.

use crate::backend::{self, Backend, BackendKind, BackendOptions, Precision};
use crate::config::ViTMSNConfig;
use crate::error::{Error, Result};
use crate::executor::{Executor, OpTime};
use crate::graph::{patch_rows, ConstData, ConstId, ConstRole, Constant, Graph, Op, ValueId};
use crate::interpolate;
use crate::loss::{self, Labels};
use crate::plan::CompiledGraph;
use crate::predict::{Embeddings, Feature, Prediction};
use crate::tensor::Tensor;
use crate::weights::Weights;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use vitmsn_kernels::gemm::WeightFormat;
use vitmsn_kernels::{Activation, AttentionShape, Isa};

/// Collects the constants of a model while its modules load, checking names and shapes.
struct Loader<'w> {
    weights: &'w Weights,
    /// What the backend takes `Linear` weights as: each is converted as it is read, so a
    /// bf16 or int8 model never holds all its weights in f32.
    format: WeightFormat,
    constants: Vec<Constant>,
    /// The modules being loaded, outermost first: names are looked up under them.
    scope: Vec<String>,
}

impl Loader<'_> {
    /// `name` inside the current scope: transformers' dotted parameter name.
    fn name(&self, name: &str) -> String {
        let parts = self.scope.iter().map(String::as_str).chain([name]);
        parts
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Runs `load` with the module `scope` (such as `encoder.layer.0`) entered, as
    /// PyTorch's module tree nests parameter names.
    fn within<T>(&mut self, scope: &str, load: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.scope.push(scope.to_string());
        let loaded = load(self);
        self.scope.pop();
        loaded
    }

    fn contains(&self, name: &str) -> bool {
        self.weights.contains(&self.name(name))
    }

    /// The values of `name`, checked to have `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.weights.get(&self.name(name), shape)
    }

    fn add(&mut self, name: String, data: ConstData, role: ConstRole) -> ConstId {
        self.constants.push(Constant { name, data, role });
        self.constants.len() - 1
    }

    fn vector(&mut self, name: &str, shape: &[usize]) -> Result<ConstId> {
        let data = ConstData::F32(self.get(name, shape)?);
        Ok(self.add(self.name(name), data, ConstRole::Vector))
    }

    /// The values of `name` as the backend takes a constant of `role`: a `Linear`
    /// weight (`shape[0]` output rows) in the backend's weight format, anything else f32.
    fn data(&self, name: &str, shape: &[usize], role: ConstRole) -> Result<ConstData> {
        let full = self.name(name);
        Ok(match (role, self.format) {
            (ConstRole::Vector, _) | (_, WeightFormat::F32) => {
                ConstData::F32(self.weights.get(&full, shape)?)
            }
            (_, WeightFormat::Bf16) => ConstData::Bf16(self.weights.get_bf16(&full, shape)?),
            (_, WeightFormat::Int8) => {
                let (values, scales) = self.weights.get_int8(&full, shape)?;
                ConstData::Int8 { values, scales }
            }
        })
    }

    /// The weight `name` of a `Linear` (or of the patch embedding) with `n` outputs of `k`
    /// inputs.
    fn matrix(&mut self, name: &str, shape: &[usize], n: usize, k: usize) -> Result<ConstId> {
        let role = ConstRole::LinearWeight { n, k };
        let data = self.data(name, shape, role)?;
        Ok(self.add(self.name(name), data, role))
    }

    /// Several tensors of shape `[rows_i, ..rest]` stacked along their first axis into one
    /// constant (how the query, key and value projections become one GEMM). Int8 weights
    /// stack with their per-row scales.
    fn stacked(&mut self, names: &[String], shape: &[usize], role: ConstRole) -> Result<ConstId> {
        // Every part is checked against the checkpoint before the stack is allocated, so
        // a config that asks for more than the file holds fails without allocating.
        let parts = names
            .iter()
            .map(|name| self.data(name, shape, role))
            .collect::<Result<Vec<_>>>()?;
        let mut parts = parts.into_iter();
        let mut data = parts.next().expect("a stack has parts");
        for part in parts {
            match (&mut data, part) {
                (ConstData::F32(all), ConstData::F32(part)) => all.extend(part),
                (ConstData::Bf16(all), ConstData::Bf16(part)) => all.extend(part),
                (
                    ConstData::Int8 { values, scales },
                    ConstData::Int8 {
                        values: part_values,
                        scales: part_scales,
                    },
                ) => {
                    values.extend(part_values);
                    scales.extend(part_scales);
                }
                _ => unreachable!("every part is read in the same format"),
            }
        }
        let full_names: Vec<String> = names.iter().map(|name| self.name(name)).collect();
        Ok(self.add(full_names.join("+"), data, role))
    }
}

/// `nn.Linear`: weight `[out, in]`, optional bias `[out]`.
struct Linear {
    weight: ConstId,
    bias: Option<ConstId>,
    out_features: usize,
    in_features: usize,
}

impl Linear {
    fn load(l: &mut Loader, in_features: usize, out_features: usize, bias: bool) -> Result<Self> {
        let shape = [out_features, in_features];
        let weight = l.matrix("weight", &shape, out_features, in_features)?;
        let bias = if bias {
            Some(l.vector("bias", &[out_features])?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            out_features,
            in_features,
        })
    }

    /// `activation(x · Wᵀ + b) + residual` over `rows` rows.
    fn forward(
        &self,
        g: &mut Graph,
        x: ValueId,
        rows: usize,
        activation: Activation,
        residual: Option<ValueId>,
    ) -> ValueId {
        let op = Op::Linear {
            m: rows,
            n: self.out_features,
            k: self.in_features,
            weight: self.weight,
            bias: self.bias,
            activation,
            residual: residual.is_some(),
        };
        let inputs: Vec<ValueId> = std::iter::once(x).chain(residual).collect();
        g.op(op, &inputs, rows * self.out_features)
    }
}

/// `nn.LayerNorm` over the hidden size.
struct LayerNorm {
    weight: ConstId,
    bias: ConstId,
    dim: usize,
    eps: f32,
}

impl LayerNorm {
    fn load(l: &mut Loader, dim: usize, eps: f64) -> Result<Self> {
        let weight = l.vector("weight", &[dim])?;
        let bias = l.vector("bias", &[dim])?;
        Ok(Self {
            weight,
            bias,
            dim,
            eps: eps as f32,
        })
    }

    fn forward(&self, g: &mut Graph, x: ValueId, rows: usize) -> ValueId {
        let op = Op::LayerNorm {
            rows,
            dim: self.dim,
            gamma: self.weight,
            beta: self.bias,
            eps: self.eps,
        };
        g.op(op, &[x], rows * self.dim)
    }
}

/// The sizes of one forward: what a graph is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ForwardShape {
    batch: usize,
    height: usize,
    width: usize,
    masked: bool,
    output_attentions: bool,
    output_hidden_states: bool,
    /// Stop at the backbone's `last_hidden_state` even when the model has a head.
    backbone_only: bool,
    /// Also output the last layer's hidden state before the final LayerNorm.
    output_prenorm: bool,
}

impl ForwardShape {
    fn patches(&self, patch: usize) -> usize {
        patch_rows(1, self.height, self.width, patch)
    }
}

/// `ViTMSNPatchEmbeddings`: a stride-`patch` convolution, run as one GEMM over patches.
struct ViTMSNPatchEmbeddings {
    weight: ConstId,
    bias: ConstId,
    image_size: (usize, usize),
    patch_size: usize,
    num_channels: usize,
    hidden_size: usize,
}

impl ViTMSNPatchEmbeddings {
    fn load(l: &mut Loader, c: &ViTMSNConfig) -> Result<Self> {
        let (p, ch, d) = (c.patch(), c.num_channels, c.hidden_size);
        let weight = l.matrix("projection.weight", &[d, ch, p, p], d, ch * p * p)?;
        let bias = l.vector("projection.bias", &[d])?;
        Ok(Self {
            weight,
            bias,
            image_size: c.image_size.hw(),
            patch_size: p,
            num_channels: ch,
            hidden_size: d,
        })
    }

    fn forward(&self, g: &mut Graph, pixel_values: ValueId, s: &ForwardShape) -> ValueId {
        let op = Op::PatchEmbed {
            batch: s.batch,
            channels: self.num_channels,
            height: s.height,
            width: s.width,
            patch: self.patch_size,
            dim: self.hidden_size,
            weight: self.weight,
            bias: self.bias,
        };
        g.op(
            op,
            &[pixel_values],
            s.batch * s.patches(self.patch_size) * self.hidden_size,
        )
    }
}

/// Patches down and across an image.
type PatchGrid = (usize, usize);

/// `ViTMSNEmbeddings`: patch embeddings, optional mask tokens, the CLS token and
/// position embeddings.
struct ViTMSNEmbeddings {
    cls_token: ConstId,
    mask_token: Option<ConstId>,
    patch_embeddings: ViTMSNPatchEmbeddings,
    /// `[num_positions + 1, hidden]`, kept on the host to interpolate for other sizes.
    position_embeddings: Arc<[f32]>,
    /// Interpolated tables by grid size.
    interpolated: Mutex<HashMap<PatchGrid, Arc<[f32]>>>,
}

impl ViTMSNEmbeddings {
    fn load(l: &mut Loader, c: &ViTMSNConfig) -> Result<Self> {
        let d = c.hidden_size;
        let cls_token = l.vector("cls_token", &[1, 1, d])?;
        let mask_token = if l.contains("mask_token") {
            Some(l.vector("mask_token", &[1, 1, d])?)
        } else {
            None
        };
        let patch_embeddings =
            l.within("patch_embeddings", |l| ViTMSNPatchEmbeddings::load(l, c))?;
        let (gh, gw) = c.grid();
        let position_embeddings = l.get("position_embeddings", &[1, gh * gw + 1, d])?;
        Ok(Self {
            cls_token,
            mask_token,
            patch_embeddings,
            position_embeddings: position_embeddings.into(),
            interpolated: Mutex::default(),
        })
    }

    /// Graph inputs: pixels `[B, C, H, W]`, the mask `[B · patches]` when masked, and the
    /// position table `[patches + 1, hidden]` (see `position_table`).
    fn forward(&self, g: &mut Graph, s: &ForwardShape) -> ValueId {
        let pe = &self.patch_embeddings;
        let (d, patches) = (pe.hidden_size, s.patches(pe.patch_size));
        let pixel_values = g.input(
            "pixel_values",
            s.batch * pe.num_channels * s.height * s.width,
        );
        let mut embeddings = pe.forward(g, pixel_values, s);
        if s.masked {
            let mask = g.input("bool_masked_pos", s.batch * patches);
            let mask_token = self.mask_token.expect("checked before building the graph");
            let op = Op::MaskBlend {
                rows: s.batch * patches,
                dim: d,
                mask_token,
            };
            embeddings = g.op(op, &[embeddings, mask], s.batch * patches * d);
        }
        let position = g.input("position_embeddings", (patches + 1) * d);
        let op = Op::ClsPosition {
            batch: s.batch,
            patches,
            dim: d,
            cls: self.cls_token,
        };
        g.op(op, &[embeddings, position], s.batch * (patches + 1) * d)
    }

    /// The position table for an input of `height × width` pixels: the stored one, or
    /// bicubically resampled to the input's patch grid when interpolating, exactly when
    /// transformers resamples.
    fn position_table(&self, height: usize, width: usize, interpolate: bool) -> Result<Arc<[f32]>> {
        let pe = &self.patch_embeddings;
        let p = pe.patch_size;
        let (gh, gw) = (height / p, width / p);
        let d = pe.hidden_size;
        let num_positions = self.position_embeddings.len() / d - 1;
        if !interpolate {
            if (height, width) != pe.image_size {
                return Err(Error::Input(format!(
                    "image size {height}x{width} doesn't match the model's {}x{}; pass --interpolate-pos-encoding",
                    pe.image_size.0, pe.image_size.1
                )));
            }
            return Ok(Arc::clone(&self.position_embeddings));
        }
        if gh * gw == num_positions && height == width {
            return Ok(Arc::clone(&self.position_embeddings));
        }
        let side = (num_positions as f64).sqrt().round() as usize;
        if side * side != num_positions {
            return Err(Error::Input(format!(
                "cannot interpolate {num_positions} position embeddings: not a square grid"
            )));
        }
        let table = &self.position_embeddings;
        let mut interpolated = self
            .interpolated
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(Arc::clone(interpolated.entry((gh, gw)).or_insert_with(
            || {
                let mut resized = table[..d].to_vec();
                resized.extend(interpolate::bicubic(&table[d..], side, side, d, gh, gw));
                resized.into()
            },
        )))
    }
}

/// `ViTMSNSelfAttention` with the query, key and value projections fused into one
/// linear of `3 · hidden` outputs, then `ViTMSNSelfOutput`'s dense layer.
struct ViTMSNAttention {
    qkv: Linear,
    output: Linear,
    num_attention_heads: usize,
    attention_head_size: usize,
}

impl ViTMSNAttention {
    fn load(l: &mut Loader, c: &ViTMSNConfig) -> Result<Self> {
        let d = c.hidden_size;
        let names =
            |suffix: &str| ["query", "key", "value"].map(|p| format!("attention.{p}.{suffix}"));
        let weight = l.stacked(
            &names("weight"),
            &[d, d],
            ConstRole::LinearWeight { n: 3 * d, k: d },
        )?;
        let bias = if c.qkv_bias {
            Some(l.stacked(&names("bias"), &[d], ConstRole::Vector)?)
        } else {
            None
        };
        let qkv = Linear {
            weight,
            bias,
            out_features: 3 * d,
            in_features: d,
        };
        let output = l.within("output.dense", |l| Linear::load(l, d, d, true))?;
        Ok(Self {
            qkv,
            output,
            num_attention_heads: c.num_attention_heads,
            attention_head_size: c.head_dim(),
        })
    }

    /// Returns `attention(x) + residual`, and the probabilities if asked for.
    fn forward(
        &self,
        g: &mut Graph,
        x: ValueId,
        residual: ValueId,
        layer: usize,
        e: &Encoder,
    ) -> (ValueId, Option<ValueId>) {
        let (s, tokens) = (e.shape, e.tokens);
        let rows = s.batch * tokens;
        let qkv = self.qkv.forward(g, x, rows, Activation::Identity, None);
        let shape = AttentionShape {
            batch: s.batch,
            tokens,
            heads: self.num_attention_heads,
            head_dim: self.attention_head_size,
        };
        let hidden = self.num_attention_heads * self.attention_head_size;
        let op = Op::Attention {
            shape,
            layer,
            probs: s.output_attentions,
        };
        let mut sizes = vec![rows * hidden];
        if s.output_attentions {
            sizes.push(s.batch * self.num_attention_heads * tokens * tokens);
        }
        let outs = g.op_multi(op, &[qkv, e.head_mask], &sizes);
        let output = self
            .output
            .forward(g, outs[0], rows, Activation::Identity, Some(residual));
        (output, outs.get(1).copied())
    }
}

/// `ViTMSNLayer`: pre-norm attention and MLP blocks, each with a residual connection.
struct ViTMSNLayer {
    attention: ViTMSNAttention,
    /// `ViTMSNIntermediate`.
    intermediate: Linear,
    /// `ViTMSNOutput`.
    output: Linear,
    layernorm_before: LayerNorm,
    layernorm_after: LayerNorm,
    intermediate_act_fn: Activation,
}

impl ViTMSNLayer {
    fn load(l: &mut Loader, c: &ViTMSNConfig) -> Result<Self> {
        let (d, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        Ok(Self {
            attention: l.within("attention", |l| ViTMSNAttention::load(l, c))?,
            intermediate: l.within("intermediate.dense", |l| Linear::load(l, d, i, true))?,
            output: l.within("output.dense", |l| Linear::load(l, i, d, true))?,
            layernorm_before: l.within("layernorm_before", |l| LayerNorm::load(l, d, eps))?,
            layernorm_after: l.within("layernorm_after", |l| LayerNorm::load(l, d, eps))?,
            intermediate_act_fn: c.activation()?,
        })
    }

    fn forward(
        &self,
        g: &mut Graph,
        hidden_states: ValueId,
        layer: usize,
        e: &Encoder,
    ) -> (ValueId, Option<ValueId>) {
        let rows = e.shape.batch * e.tokens;
        let hidden_states_norm = self.layernorm_before.forward(g, hidden_states, rows);
        // first residual connection
        let (hidden_states, attentions) =
            self.attention
                .forward(g, hidden_states_norm, hidden_states, layer, e);
        let layer_output = self.layernorm_after.forward(g, hidden_states, rows);
        let layer_output =
            self.intermediate
                .forward(g, layer_output, rows, self.intermediate_act_fn, None);
        // second residual connection
        let layer_output = self.output.forward(
            g,
            layer_output,
            rows,
            Activation::Identity,
            Some(hidden_states),
        );
        (layer_output, attentions)
    }
}

/// What every layer of one forward's encoder shares: the forward's shape, its tokens per
/// image (patches and CLS) and the graph input holding the `[layers, heads]` head mask.
struct Encoder<'s> {
    shape: &'s ForwardShape,
    tokens: usize,
    head_mask: ValueId,
}

/// `ViTMSNModel`: embeddings, the encoder's layers and the final LayerNorm.
struct ViTMSNModel {
    embeddings: ViTMSNEmbeddings,
    layers: Vec<ViTMSNLayer>,
    layernorm: LayerNorm,
    num_heads: usize,
}

impl ViTMSNModel {
    fn load(l: &mut Loader, c: &ViTMSNConfig) -> Result<Self> {
        Ok(Self {
            embeddings: l.within("embeddings", |l| ViTMSNEmbeddings::load(l, c))?,
            layers: (0..c.num_hidden_layers)
                .map(|i| l.within(&format!("encoder.layer.{i}"), |l| ViTMSNLayer::load(l, c)))
                .collect::<Result<_>>()?,
            layernorm: l.within("layernorm", |l| {
                LayerNorm::load(l, c.hidden_size, c.layer_norm_eps)
            })?,
            num_heads: c.num_attention_heads,
        })
    }

    /// Builds the graph up to the final LayerNorm: transformers' `BaseModelOutput`, with
    /// every layer's input and the last layer's output as `hidden_states`, and each layer's
    /// probabilities when the shape asks for them.
    fn forward(&self, g: &mut Graph, s: &ForwardShape) -> BaseModelOutput {
        let tokens = s.patches(self.embeddings.patch_embeddings.patch_size) + 1;
        let mut hidden_states = self.embeddings.forward(g, s);
        let encoder = Encoder {
            shape: s,
            tokens,
            head_mask: g.input("head_mask", self.layers.len() * self.num_heads),
        };
        let mut all_hidden_states = Vec::with_capacity(self.layers.len() + 1);
        let mut all_attentions = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            all_hidden_states.push(hidden_states);
            let (output, attentions) = layer.forward(g, hidden_states, i, &encoder);
            all_attentions.extend(attentions);
            hidden_states = output;
        }
        all_hidden_states.push(hidden_states);
        BaseModelOutput {
            last_hidden_state: self.layernorm.forward(g, hidden_states, s.batch * tokens),
            hidden_states: all_hidden_states,
            attentions: all_attentions,
        }
    }
}

/// The backbone's results as graph values.
struct BaseModelOutput {
    last_hidden_state: ValueId,
    /// The embeddings' output, then each layer's output (before the final LayerNorm).
    hidden_states: Vec<ValueId>,
    /// Each layer's attention probabilities, when asked for.
    attentions: Vec<ValueId>,
}

/// What a graph output holds; `io.rs` turns `ForwardOutput`'s fields into file names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    LastHiddenState,
    Logits,
    HiddenState(usize),
    Attention(usize),
}

impl Output {
    /// The name of the graph output, for messages.
    fn label(self) -> String {
        match self {
            Output::LastHiddenState => "last_hidden_state".into(),
            Output::Logits => "logits".into(),
            Output::HiddenState(i) => format!("hidden_states.{i}"),
            Output::Attention(i) => format!("attentions.{i}"),
        }
    }
}

/// A graph with the meaning of each of its outputs, in output order.
struct ModelGraph {
    compiled: CompiledGraph,
    outputs: Vec<Output>,
}

/// What follows the backbone: nothing for `ViTMSNModel`; for
/// `ViTMSNForImageClassification`, a linear layer on the final CLS token, or `nn.Identity`
/// when `num_labels` is 0 (the CLS token itself is then the logits).
enum Head {
    None,
    Identity,
    Linear(Linear),
}

/// The inputs of one forward, as transformers' `forward` takes them.
#[derive(Clone, Debug, Default)]
pub struct ForwardInput {
    /// `[batch, channels, height, width]`.
    pub pixel_values: Tensor,
    /// `[batch · num_patches]`, true where the patch is replaced by the mask token.
    pub bool_masked_pos: Option<Vec<bool>>,
    /// `[heads]` or `[layers, heads]`, multiplying the attention probabilities.
    pub head_mask: Option<Tensor>,
    /// Class indices or regression targets `[batch]` (or `[batch, labels]`): the loss is computed when given.
    pub labels: Option<Labels>,
    /// Whether to return each layer's attention probabilities.
    pub output_attentions: bool,
    /// Whether to return the embeddings and each layer's output.
    pub output_hidden_states: bool,
    /// Whether to resample the position embeddings to the image's size, as transformers does.
    pub interpolate_pos_encoding: bool,
}

impl ForwardInput {
    /// `(batch, height, width)` of `pixel_values`, checked to be a non-empty batch of
    /// `channels`-channel images of at least one `patch` x `patch` patch.
    fn image_dims(&self, channels: usize, patch: usize) -> Result<(usize, usize, usize)> {
        let shape = &self.pixel_values.shape;
        let &[batch, given_channels, height, width] = shape.as_slice() else {
            return Err(Error::Input(format!(
                "pixel_values has shape {shape:?}, expected [batch, channels, height, width]"
            )));
        };
        if batch == 0 {
            return Err(Error::Input("pixel_values holds an empty batch".into()));
        }
        if given_channels != channels {
            return Err(Error::Input(format!(
                "pixel_values has {given_channels} channels, the model expects {channels}"
            )));
        }
        if height < patch || width < patch {
            return Err(Error::Input(format!(
                "image {height}x{width} is smaller than one {patch}x{patch} patch"
            )));
        }
        Ok((batch, height, width))
    }

    /// The head mask as `[layers, heads]` values, as transformers' `get_head_mask` makes
    /// them: all ones when absent, a `[heads]` mask repeated for every layer.
    fn head_mask_values(&self, layers: usize, heads: usize) -> Result<Vec<f32>> {
        match &self.head_mask {
            None => Ok(vec![1.0; layers * heads]),
            Some(m) if m.shape == [heads] => Ok(m.data.repeat(layers)),
            Some(m) if m.shape == [layers, heads] => Ok(m.data.clone()),
            Some(m) => Err(Error::Input(format!(
                "head_mask has shape {:?}, expected [{heads}] or [{layers}, {heads}]",
                m.shape
            ))),
        }
    }

    /// `bool_masked_pos` as the 0/1 values the mask blend reads.
    fn mask_values(&self) -> Option<Vec<f32>> {
        let mask = self.bool_masked_pos.as_ref()?;
        Some(mask.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect())
    }
}

/// What a loaded model takes as forward inputs, enough to check a tensor file's header
/// before its data is read ([`crate::io::read_inputs`]).
#[derive(Clone, Debug)]
pub struct InputSpec {
    /// Channels of an image.
    pub num_channels: usize,
    /// The `(height, width)` images must have; `None` when position embeddings are
    /// interpolated to any size.
    pub image_size: Option<(usize, usize)>,
    /// Side of a patch in pixels.
    pub patch_size: usize,
    /// Transformer layers (the first dimension of a 2-D head mask).
    pub num_layers: usize,
    /// Attention heads per layer.
    pub num_heads: usize,
    /// The classifier's outputs; `None` for a model without a head.
    pub num_labels: Option<usize>,
    /// Whether the checkpoint has the mask token that `bool_masked_pos` needs.
    pub has_mask_token: bool,
    /// The backend's memory budget, which `pixel_values` (copied into a slot as f32)
    /// must fit; `None` for a backend without one.
    pub memory_budget: Option<u64>,
}

/// What transformers returns: `last_hidden_state` for the bare model, `logits` (and
/// `loss` with labels) for the classifier, and the optional per-layer tensors.
#[derive(Clone, Debug, Default)]
pub struct ForwardOutput {
    /// The bare model's output `[batch, tokens, hidden]`, after the final layer norm.
    pub last_hidden_state: Option<Tensor>,
    /// The classifier's output `[batch, labels]`.
    pub logits: Option<Tensor>,
    /// The classifier's loss, when labels were given.
    pub loss: Option<f32>,
    /// The embedding output, then each layer's output: `[batch, tokens, hidden]`.
    pub hidden_states: Vec<Tensor>,
    /// Per layer: `[batch, heads, tokens, tokens]`.
    pub attentions: Vec<Tensor>,
}

/// How to load a [`ViTMSN`]: the backend, its options, and whether to keep a
/// classifier's head. Made by [`ViTMSN::builder`].
#[derive(Clone, Debug, Default)]
pub struct ViTMSNBuilder {
    backend: Option<BackendKind>,
    options: BackendOptions,
    backbone_only: bool,
}

impl ViTMSNBuilder {
    /// The backend to run on; by default the `cpu` backend where this CPU has SIMD
    /// kernels, else `scalar`.
    pub fn backend(mut self, backend: BackendKind) -> Self {
        self.backend = Some(backend);
        self
    }

    /// All of the backend's options at once.
    pub fn options(mut self, options: BackendOptions) -> Self {
        self.options = options;
        self
    }

    /// Threads of the `cpu` backend (by default `VITMSN_THREADS`, else every core).
    pub fn threads(mut self, threads: usize) -> Self {
        self.options.threads = Some(threads);
        self
    }

    /// The instruction set of the `cpu` backend's kernels (by default the best this CPU
    /// runs).
    pub fn isa(mut self, isa: Isa) -> Self {
        self.options.isa = Some(isa);
        self
    }

    /// The storage precision of weights and activations.
    pub fn precision(mut self, precision: Precision) -> Self {
        self.options.precision = Some(precision);
        self
    }

    /// The most bytes a forward's activations may take on the `scalar` and `cpu`
    /// backends.
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.options.max_memory = Some(bytes);
        self
    }

    /// Loads a classifier's backbone alone, as transformers' `ViTMSNModel` would: its
    /// forward gives `last_hidden_state`, not logits.
    pub fn backbone_only(mut self, backbone_only: bool) -> Self {
        self.backbone_only = backbone_only;
        self
    }

    /// Loads `config.json` and the safetensors checkpoint of a `save_pretrained`
    /// directory.
    pub fn load(&self, dir: impl AsRef<Path>) -> Result<ViTMSN> {
        let dir = dir.as_ref();
        let config = ViTMSNConfig::from_file(&dir.join("config.json"))?;
        let weights = Weights::from_dir(dir)?;
        self.build(config, &weights)
    }

    /// Builds the model from a config and weights already in memory.
    pub fn build(&self, config: ViTMSNConfig, weights: &Weights) -> Result<ViTMSN> {
        let kind = self
            .backend
            .unwrap_or_else(BackendKind::default_for_this_cpu);
        let mut options = self.options.clone();
        // A checkpoint `vitmsn quantize` wrote runs in int8 unless asked otherwise (its
        // weights are dequantized for the other precisions and backends).
        if options.precision.is_none() && kind == BackendKind::Cpu && weights.is_quantized() {
            options.precision = Some(Precision::Int8);
        }
        let backend = backend::create(kind, &options)?;
        ViTMSN::with_head(config, weights, backend, !self.backbone_only)
    }
}

/// A loaded ViTMSN model (bare or with its classification head) bound to a backend. It is
/// `Send + Sync` and its forwards take `&self`: threads can share one model (each forward
/// runs with buffers of its own; on the `cpu` backend their ops take turns on its thread
/// pool).
pub struct ViTMSN {
    config: ViTMSNConfig,
    vit: ViTMSNModel,
    head: Head,
    executor: Executor,
    /// Graphs by the shape of forward they compute, built on first use.
    graphs: Mutex<HashMap<ForwardShape, Arc<ModelGraph>>>,
}

impl std::fmt::Debug for ViTMSN {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = self.executor.backend();
        f.debug_struct("ViTMSN")
            .field("classifier", &self.is_classifier())
            .field("backend", &backend.name())
            .field("threads", &backend.threads())
            .field("isa", &backend.isa())
            .field("precision", &backend.precision())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ViTMSN {
    /// Loads `config.json` and the safetensors checkpoint of a `save_pretrained` directory
    /// onto `backend`; [`ViTMSN::builder`] names the options one by one.
    pub fn from_dir(
        dir: impl AsRef<Path>,
        backend: BackendKind,
        options: &BackendOptions,
    ) -> Result<Self> {
        Self::builder()
            .backend(backend)
            .options(options.clone())
            .load(dir)
    }

    /// Options for loading a model, starting from the defaults: the best backend for
    /// this CPU, on every core, in f32.
    ///
    /// ```no_run
    /// use vitmsn::{BackendKind, ViTMSN};
    /// let model = ViTMSN::builder()
    ///     .backend(BackendKind::Cpu)
    ///     .threads(2)
    ///     .backbone_only(true)
    ///     .load("path/to/vit-msn-small")?;
    /// # Ok::<(), vitmsn::Error>(())
    /// ```
    pub fn builder() -> ViTMSNBuilder {
        ViTMSNBuilder::default()
    }

    /// Builds the model from a config and weights, handing the weights to `backend`.
    pub fn new(config: ViTMSNConfig, weights: &Weights, backend: Box<dyn Backend>) -> Result<Self> {
        Self::with_head(config, weights, backend, true)
    }

    /// [`ViTMSN::new`], leaving out a classifier's head when `with_head` is false.
    fn with_head(
        config: ViTMSNConfig,
        weights: &Weights,
        mut backend: Box<dyn Backend>,
        with_head: bool,
    ) -> Result<Self> {
        if let Some(budget) = backend.memory_budget() {
            let parameters = config.parameter_count().unwrap_or(usize::MAX);
            crate::backend::memory::check_weights((parameters as u64).saturating_mul(4), budget)?;
        }
        // A classifier's backbone is its `vit` module; a bare model's parameters have no
        // prefix.
        let backbone = if weights.contains("vit.embeddings.cls_token") {
            "vit"
        } else {
            ""
        };
        let mut loader = Loader {
            weights,
            format: backend.weight_format(),
            constants: Vec::new(),
            scope: Vec::new(),
        };
        let vit = loader.within(backbone, |l| ViTMSNModel::load(l, &config))?;
        let head = match config.num_labels() {
            _ if !with_head => Head::None,
            _ if !weights.contains("classifier.weight") && !config.is_classifier() => Head::None,
            0 => Head::Identity,
            labels => Head::Linear(loader.within("classifier", |l| {
                Linear::load(l, config.hidden_size, labels, true)
            })?),
        };
        backend.load_constants(loader.constants)?;
        Ok(Self {
            config,
            vit,
            head,
            executor: Executor::new(Arc::from(backend)),
            graphs: Mutex::default(),
        })
    }

    /// The checkpoint's configuration.
    pub fn config(&self) -> &ViTMSNConfig {
        &self.config
    }

    /// Whether the model has a classification head (and so gives logits).
    pub fn is_classifier(&self) -> bool {
        !matches!(self.head, Head::None)
    }

    /// The inputs this model takes, with or without `interpolate_pos_encoding`.
    pub fn input_spec(&self, interpolate_pos_encoding: bool) -> InputSpec {
        let c = &self.config;
        InputSpec {
            num_channels: c.num_channels,
            image_size: (!interpolate_pos_encoding).then(|| c.image_size.hw()),
            patch_size: c.patch(),
            num_layers: c.num_hidden_layers,
            num_heads: c.num_attention_heads,
            num_labels: match &self.head {
                Head::None => None,
                Head::Identity => Some(c.hidden_size),
                Head::Linear(linear) => Some(linear.out_features),
            },
            has_mask_token: self.vit.embeddings.mask_token.is_some(),
            memory_budget: self.executor.backend().memory_budget(),
        }
    }

    /// Times every op of the forwards that follow (or stops, with `false`); see
    /// [`op_times`](Self::op_times). Fails for a backend that runs a forward's ops together.
    pub fn time_ops(&mut self, on: bool) -> Result<()> {
        self.executor.time_ops(on)
    }

    /// Each op of the last forward with its time, in graph order, while op timing is on.
    pub fn op_times(&self) -> Option<Vec<OpTime>> {
        self.executor.op_times()
    }

    /// The backend's name (`scalar`, `cpu`, `gpu`).
    pub fn backend_name(&self) -> &'static str {
        self.executor.backend().name()
    }

    /// Threads the backend computes on.
    pub fn backend_threads(&self) -> usize {
        self.executor.backend().threads()
    }

    /// The instruction set of the backend's CPU kernels, where it chooses one.
    pub fn backend_isa(&self) -> Option<Isa> {
        self.executor.backend().isa()
    }

    /// The precision the model's weights and products run in.
    pub fn precision(&self) -> Precision {
        self.executor.backend().precision()
    }

    /// Runs the model on one batch.
    pub fn forward(&self, input: &ForwardInput) -> Result<ForwardOutput> {
        let shape = self.check(input, false, false)?;
        let mut out = ForwardOutput::default();
        // Hidden states and attentions come in layer order.
        for (key, tensor) in self.execute(shape, input)? {
            match key {
                Output::LastHiddenState => out.last_hidden_state = Some(tensor),
                Output::Logits => out.logits = Some(tensor),
                Output::HiddenState(_) => out.hidden_states.push(tensor),
                Output::Attention(_) => out.attentions.push(tensor),
            }
        }
        if let (Some(labels), Some(logits)) = (&input.labels, &out.logits) {
            let num_labels = logits.shape[1];
            let problem = loss::problem_type(self.config.problem_type, num_labels, labels);
            out.loss = Some(loss::loss(problem, &logits.data, num_labels, labels)?);
        }
        Ok(out)
    }

    /// The backbone's image embeddings of a batch `[batch, channels, height, width]`, for
    /// a bare model or a classifier alike (its head is not run): each of `features`, one
    /// row of `hidden_size` values per image.
    pub fn embed(&self, pixel_values: Tensor, features: &[Feature]) -> Result<Embeddings> {
        let input = ForwardInput {
            pixel_values,
            ..Default::default()
        };
        let prenorm = features.contains(&Feature::ClsPrenorm);
        let shape = self.check(&input, true, prenorm)?;
        let (mut last_hidden_state, mut before_norm) = (Vec::new(), Vec::new());
        for (key, tensor) in self.execute(shape, &input)? {
            match key {
                Output::LastHiddenState => last_hidden_state = tensor.data,
                // Only the last layer's output is asked for (`output_prenorm`).
                Output::HiddenState(_) => before_norm = tensor.data,
                Output::Logits | Output::Attention(_) => {}
            }
        }
        let tokens = shape.patches(self.config.patch()) + 1;
        Ok(Embeddings::from_hidden_states(
            features,
            shape.batch,
            tokens,
            self.config.hidden_size,
            &last_hidden_state,
            &before_norm,
        ))
    }

    /// The `top_k` most probable labels of each image of a batch, most probable first:
    /// softmax over the logits (sigmoid for multi-label and single-output heads, as
    /// transformers' image-classification pipeline), names from `id2label`.
    pub fn classify(&self, pixel_values: Tensor, top_k: usize) -> Result<Vec<Vec<Prediction>>> {
        if !self.is_classifier() {
            return Err(Error::Input(
                "the model has no classification head (config.json names no *ForImageClassification and there is no classifier.weight): it gives embeddings (vitmsn embed, or fewshot with labelled examples), not labels".into(),
            ));
        }
        let out = self.forward(&ForwardInput {
            pixel_values,
            ..Default::default()
        })?;
        let logits = out.logits.expect("a classifier outputs logits");
        Ok(crate::predict::top_k(&logits, &self.config, top_k))
    }

    /// Runs the graph for `shape` on `input`, and returns its outputs, each with what it is.
    fn execute(&self, shape: ForwardShape, input: &ForwardInput) -> Result<Vec<(Output, Tensor)>> {
        let (layers, heads) = (
            self.config.num_hidden_layers,
            self.config.num_attention_heads,
        );
        let head_mask = input.head_mask_values(layers, heads)?;
        let mask = input.mask_values();
        let graph = self.graph(shape);
        let ModelGraph { compiled, outputs } = &*graph;
        let mut run = self.executor.start(compiled);
        // Allocating first: a batch over the memory budget fails before the position
        // table is interpolated for it.
        run.prepare(compiled)?;
        let position = self.vit.embeddings.position_table(
            shape.height,
            shape.width,
            input.interpolate_pos_encoding,
        )?;
        let mut feeds: Vec<(&str, &[f32])> = vec![
            ("pixel_values", &input.pixel_values.data),
            ("head_mask", &head_mask),
            ("position_embeddings", &position),
        ];
        if let Some(mask) = &mask {
            feeds.push(("bool_masked_pos", mask));
        }
        let results = run.run(compiled, &feeds)?;
        Ok(outputs
            .iter()
            .zip(&compiled.graph.outputs)
            .zip(results)
            .map(|((&key, (_, _, shape)), data)| (key, Tensor::new(shape.clone(), data)))
            .collect())
    }

    /// Checks the inputs against the model, as transformers does, and returns the
    /// shape the graph is built for.
    fn check(
        &self,
        input: &ForwardInput,
        backbone_only: bool,
        output_prenorm: bool,
    ) -> Result<ForwardShape> {
        let c = &self.config;
        let (batch, height, width) = input.image_dims(c.num_channels, c.patch())?;
        let shape = ForwardShape {
            batch,
            height,
            width,
            masked: input.bool_masked_pos.is_some(),
            output_attentions: input.output_attentions,
            output_hidden_states: input.output_hidden_states,
            backbone_only,
            output_prenorm,
        };
        self.check_sizes(&shape)?;
        if let Some(mask) = &input.bool_masked_pos {
            let patches = shape.patches(c.patch());
            if mask.len() != batch * patches {
                return Err(Error::Input(format!(
                    "bool_masked_pos holds {} values, expected batch {batch} x {patches} patches",
                    mask.len()
                )));
            }
            if self.vit.embeddings.mask_token.is_none() {
                return Err(Error::Input(
                    "bool_masked_pos given but the checkpoint has no embeddings.mask_token".into(),
                ));
            }
        }
        if input.labels.is_some() && !self.is_classifier() {
            return Err(Error::Input(
                "labels given but the model has no classification head".into(),
            ));
        }
        Ok(shape)
    }

    /// The graph for `shape`, built and cached on first use.
    fn graph(&self, shape: ForwardShape) -> Arc<ModelGraph> {
        let mut graphs = self.graphs.lock().unwrap_or_else(PoisonError::into_inner);
        let id = graphs.len() as u64;
        let graph = graphs.entry(shape).or_insert_with(|| {
            let (graph, outputs) = self.build_graph(&shape);
            let compiled = CompiledGraph::new(graph, id);
            Arc::new(ModelGraph { compiled, outputs })
        });
        Arc::clone(graph)
    }

    /// Allocates what a forward of `batch` images of the configured size takes, or fails
    /// when that is over the backend's memory budget: a caller can check a batch before
    /// building its pixels.
    pub fn reserve(&self, batch: usize) -> Result<()> {
        let graph = self.plain_graph(batch)?;
        self.executor
            .start(&graph.compiled)
            .prepare(&graph.compiled)
    }

    /// Multiply-adds ×2 of a forward of `batch` images of the configured size: each op's
    /// `Op::flops` (the matrix products and attention; norms and activations are not
    /// counted), summed over the graph that forward runs.
    pub fn flops(&self, batch: usize) -> Result<f64> {
        let graph = self.plain_graph(batch)?;
        let nodes = &graph.compiled.graph.nodes;
        Ok(nodes.iter().filter_map(|node| node.op.flops()).sum())
    }

    /// The graph of a plain forward of `batch` images of the configured size.
    fn plain_graph(&self, batch: usize) -> Result<Arc<ModelGraph>> {
        let (height, width) = self.config.image_size.hw();
        let shape = ForwardShape {
            batch,
            height,
            width,
            masked: false,
            output_attentions: false,
            output_hidden_states: false,
            backbone_only: false,
            output_prenorm: false,
        };
        self.check_sizes(&shape)?;
        Ok(self.graph(shape))
    }

    /// Refuses a forward whose values could not even be counted: every size the graph
    /// multiplies out must fit a `usize` (the budget is checked when it is allocated).
    fn check_sizes(&self, s: &ForwardShape) -> Result<()> {
        let c = &self.config;
        let patch = c.patch();
        let too_large = || {
            Error::Input(format!(
                "a batch of {} images of {}x{} is too large to compute",
                s.batch, s.height, s.width
            ))
        };
        if s.height.max(s.width) > crate::config::MAX_IMAGE_SIDE {
            return Err(too_large());
        }
        let patches = (s.height / patch).saturating_mul(s.width / patch);
        if patches >= crate::config::MAX_TOKENS {
            return Err(too_large());
        }
        let tokens = patches + 1;
        let widest = (3 * c.hidden_size).max(c.intermediate_size);
        let products = [
            vec![s.batch, c.num_channels, s.height, s.width],
            vec![s.batch, tokens, widest],
            vec![s.batch, patches, c.num_channels, patch, patch],
            vec![s.batch, c.num_attention_heads, tokens, tokens],
        ];
        let fits = products.iter().all(|factors| {
            factors
                .iter()
                .try_fold(1usize, |product, &f| product.checked_mul(f))
                .and_then(|values| values.checked_mul(4))
                .is_some()
        });
        if !fits {
            return Err(too_large());
        }
        Ok(())
    }

    /// The graph of a forward of shape `s`, and what each of its outputs is.
    fn build_graph(&self, s: &ForwardShape) -> (Graph, Vec<Output>) {
        let mut g = Graph::default();
        let mut outputs = Vec::new();
        let mut output = |g: &mut Graph, key: Output, value: ValueId, shape: Vec<usize>| {
            g.output(key.label(), value, shape);
            outputs.push(key);
        };
        let vit = self.vit.forward(&mut g, s);
        let tokens = s.patches(self.config.patch()) + 1;
        let d = self.config.hidden_size;
        let hidden_shape = vec![s.batch, tokens, d];
        let attention_shape = vec![s.batch, self.config.num_attention_heads, tokens, tokens];
        if s.output_hidden_states {
            for (i, &hidden) in vit.hidden_states.iter().enumerate() {
                output(&mut g, Output::HiddenState(i), hidden, hidden_shape.clone());
            }
        } else if s.output_prenorm {
            let last = vit.hidden_states.len() - 1;
            let hidden = vit.hidden_states[last];
            output(
                &mut g,
                Output::HiddenState(last),
                hidden,
                hidden_shape.clone(),
            );
        }
        for (i, &probs) in vit.attentions.iter().enumerate() {
            output(&mut g, Output::Attention(i), probs, attention_shape.clone());
        }
        if s.backbone_only || matches!(self.head, Head::None) {
            output(
                &mut g,
                Output::LastHiddenState,
                vit.last_hidden_state,
                hidden_shape,
            );
            return (g, outputs);
        }
        let select_cls = Op::SelectCls {
            batch: s.batch,
            tokens,
            dim: d,
        };
        let cls = g.op(select_cls, &[vit.last_hidden_state], s.batch * d);
        let (logits, labels) = match &self.head {
            Head::Linear(linear) => (
                linear.forward(&mut g, cls, s.batch, Activation::Identity, None),
                linear.out_features,
            ),
            Head::Identity | Head::None => (cls, d),
        };
        output(&mut g, Output::Logits, logits, vec![s.batch, labels]);
        (g, outputs)
    }
}
