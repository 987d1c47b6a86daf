//! The model as a small dataflow graph: values with static shapes, and ops that read some
//! values and write others. A graph is built for one (batch, image size, options) and
//! run many times by the executor; backends implement the ops.

use vitmsn_kernels::{Activation, AttentionShape};

/// Index of a value (an activation or a graph input) in `Graph::values`.
pub type ValueId = usize;
/// Index of a constant (a weight) in the model's constant list.
pub type ConstId = usize;

/// A weight handed to the backend once per model.
#[derive(Clone, Debug)]
pub struct Constant {
    /// The checkpoint name (or names, for a fused tensor), for messages.
    pub name: String,
    pub data: ConstData,
    pub role: ConstRole,
}

/// A constant's values in the format the backend asked for (`Backend::weight_format`):
/// only `Linear` weights are ever bf16 or int8.
#[derive(Clone, Debug)]
pub enum ConstData {
    F32(Vec<f32>),
    /// bf16 bits.
    Bf16(Vec<u16>),
    /// Symmetric per row: `w[j][p] ≈ scales[j] · values[j·k + p]`.
    Int8 {
        values: Vec<i8>,
        scales: Vec<f32>,
    },
}

impl ConstData {
    /// The `f32` values of a constant the backend asked for in `f32`.
    ///
    /// Panics for another format: the loader makes constants only in the format the
    /// backend names, so that is a bug.
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            ConstData::F32(values) => values,
            other => panic!("a {} constant given to an f32 backend", other.format_name()),
        }
    }

    /// As [`ConstData::into_f32`], borrowed.
    pub fn as_f32(&self) -> &[f32] {
        match self {
            ConstData::F32(values) => values,
            other => panic!("a {} constant given to an f32 backend", other.format_name()),
        }
    }

    fn format_name(&self) -> &'static str {
        match self {
            ConstData::F32(_) => "f32",
            ConstData::Bf16(_) => "bf16",
            ConstData::Int8 { .. } => "int8",
        }
    }
}

/// What a constant is used for, so a backend can lay it out for its kernels at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConstRole {
    /// The `[n, k]` weight of a `Linear` (or of the patch embedding, flattened).
    LinearWeight { n: usize, k: usize },
    /// Anything read as plain values: biases, norms, tokens.
    Vector,
}

/// The operations of the ViTMSN forward. Activation and residual add are fused into
/// `Linear` as its epilogue; the classifier is `SelectCls` followed by a `Linear`.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Stride-`patch` convolution as a GEMM over patches. In: pixels `[B, C, H, W]`.
    /// Out: `[B · (H/p) · (W/p), dim]`. `weight` is the conv kernel seen as `[dim, C·p·p]`.
    PatchEmbed {
        batch: usize,
        channels: usize,
        height: usize,
        width: usize,
        patch: usize,
        dim: usize,
        weight: ConstId,
        bias: ConstId,
    },
    /// Replaces masked patch embeddings by the mask token. In: embeddings `[rows, dim]`,
    /// mask `[rows]` (0 or 1). Out: `[rows, dim]`.
    MaskBlend {
        rows: usize,
        dim: usize,
        mask_token: ConstId,
    },
    /// Prepends the CLS token and adds position embeddings. In: embeddings
    /// `[B · patches, dim]`, position table `[patches + 1, dim]`. Out: `[B · (patches + 1), dim]`.
    ClsPosition {
        batch: usize,
        patches: usize,
        dim: usize,
        cls: ConstId,
    },
    /// In: `[rows, dim]`. Out: `[rows, dim]`.
    LayerNorm {
        rows: usize,
        dim: usize,
        gamma: ConstId,
        beta: ConstId,
        eps: f32,
    },
    /// `act(x · Wᵀ + bias) + residual`. In: x `[m, k]`, then the residual `[m, n]` if
    /// `residual`. Out: `[m, n]`.
    Linear {
        m: usize,
        n: usize,
        k: usize,
        weight: ConstId,
        bias: Option<ConstId>,
        activation: Activation,
        residual: bool,
    },
    /// Multi-head self-attention of layer `layer`. In: fused qkv `[B · T, 3 · hidden]`,
    /// head mask `[layers, heads]`. Out: context `[B · T, hidden]`, then the probabilities
    /// `[B, heads, T, T]` if `probs`.
    Attention {
        shape: AttentionShape,
        layer: usize,
        probs: bool,
    },
    /// Row 0 of each image. In: `[B · tokens, dim]`. Out: `[B, dim]`.
    SelectCls {
        batch: usize,
        tokens: usize,
        dim: usize,
    },
}

impl Op {
    /// The op's kind, as profiles group ops.
    pub fn name(&self) -> &'static str {
        match self {
            Op::PatchEmbed { .. } => "PatchEmbed",
            Op::MaskBlend { .. } => "MaskBlend",
            Op::ClsPosition { .. } => "ClsPosition",
            Op::LayerNorm { .. } => "LayerNorm",
            Op::Linear { .. } => "Linear",
            Op::Attention { .. } => "Attention",
            Op::SelectCls { .. } => "SelectCls",
        }
    }

    /// Floating-point operations of its matrix products (two per multiply-add), for the
    /// ops that have them: the patch embedding, `Linear` and attention (`QKᵀ` and `PV`).
    pub fn flops(&self) -> Option<f64> {
        let product = |m: usize, n: usize, k: usize| Some(2.0 * (m * n * k) as f64);
        match *self {
            Op::PatchEmbed {
                batch,
                channels,
                height,
                width,
                patch,
                dim,
                ..
            } => product(
                patch_rows(batch, height, width, patch),
                dim,
                channels * patch * patch,
            ),
            Op::Linear { m, n, k, .. } => product(m, n, k),
            Op::Attention { shape, .. } => {
                let t = shape.tokens;
                product(2 * shape.batch * shape.heads, t * t, shape.head_dim)
            }
            _ => None,
        }
    }
}

/// The rows of a patch embedding: one per `patch` x `patch` tile of each of `batch` images
/// of `height` x `width` (the sizes are multiples of `patch`, or the remainder is cut off,
/// as PyTorch's strided convolution does). It is the GEMM's M.
pub fn patch_rows(batch: usize, height: usize, width: usize, patch: usize) -> usize {
    batch * (height / patch) * (width / patch)
}

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Element count of each value.
    pub value_sizes: Vec<usize>,
    pub nodes: Vec<Node>,
    /// Values the caller writes before a run, by name.
    pub inputs: Vec<(String, ValueId)>,
    /// Values the caller reads after a run, by name, with their shapes.
    pub outputs: Vec<(String, ValueId, Vec<usize>)>,
}

impl Graph {
    /// Declares an input value of `size` elements.
    pub fn input(&mut self, name: &str, size: usize) -> ValueId {
        let id = self.new_value(size);
        self.inputs.push((name.to_string(), id));
        id
    }

    /// Appends a node producing one value of `size` elements.
    pub fn op(&mut self, op: Op, inputs: &[ValueId], size: usize) -> ValueId {
        self.op_multi(op, inputs, &[size])[0]
    }

    /// Appends a node producing one value per entry of `sizes`.
    pub fn op_multi(&mut self, op: Op, inputs: &[ValueId], sizes: &[usize]) -> Vec<ValueId> {
        let outputs: Vec<ValueId> = sizes.iter().map(|&s| self.new_value(s)).collect();
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            outputs: outputs.clone(),
        });
        outputs
    }

    /// Marks `value` as a result the caller will read, with the shape it is reported in.
    pub fn output(&mut self, name: String, value: ValueId, shape: Vec<usize>) {
        debug_assert_eq!(shape.iter().product::<usize>(), self.value_sizes[value]);
        self.outputs.push((name, value, shape));
    }

    fn new_value(&mut self, size: usize) -> ValueId {
        self.value_sizes.push(size);
        self.value_sizes.len() - 1
    }
}
