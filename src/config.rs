//! `ViTMSNConfig`, read from the `config.json` that transformers' `save_pretrained` writes.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use vitmsn_kernels::Activation;

/// The largest `hidden_size` and `intermediate_size` accepted (published ViTs use up to
/// 8192): far above any real checkpoint, low enough that a layer's weights are counted
/// without overflow.
pub const MAX_WIDTH: usize = 1 << 20;
/// The most encoder layers accepted.
pub const MAX_LAYERS: usize = 4096;
/// The most image channels accepted.
pub const MAX_CHANNELS: usize = 4096;
/// The most classifier labels accepted.
pub const MAX_LABELS: usize = 1 << 24;
/// The longest image side, in pixels, of `image_size` and of a forward's input.
pub const MAX_IMAGE_SIDE: usize = 1 << 20;
/// The most tokens (patches and the CLS token) of a forward: attention is quadratic in
/// it, so anything near the limit is refused by the memory budget long before.
pub const MAX_TOKENS: usize = 1 << 24;

/// An `int` or a `[height, width]` pair, as transformers accepts for sizes.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Size2 {
    /// One number for both sides.
    Square(usize),
    /// `[height, width]`.
    Pair([usize; 2]),
}

impl Size2 {
    /// `(height, width)`.
    pub fn hw(self) -> (usize, usize) {
        match self {
            Size2::Square(s) => (s, s),
            Size2::Pair([h, w]) => (h, w),
        }
    }
}

/// The fields of transformers' `ViTMSNConfig`, with its defaults. Dropout and initializer
/// fields are accepted and ignored: they do not change inference.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct ViTMSNConfig {
    /// Width of every token's vector.
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// The MLP's activation, by transformers' `ACT2FN` name.
    pub hidden_act: String,
    /// Layer norm epsilon.
    pub layer_norm_eps: f64,
    /// The image size the position embeddings are for.
    pub image_size: Size2,
    /// Side of a square patch.
    pub patch_size: Size2,
    /// Channels of the input images.
    pub num_channels: usize,
    /// Whether the query, key and value projections have biases.
    pub qkv_bias: bool,
    /// The model classes the checkpoint was saved from.
    pub architectures: Option<Vec<String>>,
    /// Labels of the classification head, when set explicitly.
    pub num_labels: Option<usize>,
    /// Label names by index (as strings, as JSON keys are).
    pub id2label: Option<BTreeMap<String, String>>,
    /// Label indices by name.
    pub label2id: Option<BTreeMap<String, i64>>,
    /// What the loss treats the logits as; inferred from the labels when absent.
    pub problem_type: Option<ProblemType>,
}

/// transformers' `problem_type`, which chooses the classification loss.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProblemType {
    /// Mean squared error on the logits.
    Regression,
    /// Cross entropy over the classes.
    SingleLabelClassification,
    /// Binary cross entropy per class.
    MultiLabelClassification,
}

impl Default for ViTMSNConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-6,
            image_size: Size2::Square(224),
            patch_size: Size2::Square(16),
            num_channels: 3,
            qkv_bias: true,
            architectures: None,
            num_labels: None,
            id2label: None,
            label2id: None,
            problem_type: None,
        }
    }
}

impl ViTMSNConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::files::read_json_text(path)?;
        Self::from_json(&text)
    }

    /// Parses and checks the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        // serde would take a JSON array as the fields in order; transformers wants an object.
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        if !json.is_object() {
            return Err(Error::Config("expected a JSON object".into()));
        }
        let config: Self =
            serde_json::from_value(json).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        self.activation()?;
        let positive = [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("num_channels", self.num_channels),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Config(format!("{name} must be positive")));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::Config(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        let too_large = [
            ("hidden_size", self.hidden_size, MAX_WIDTH),
            ("intermediate_size", self.intermediate_size, MAX_WIDTH),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_channels", self.num_channels, MAX_CHANNELS),
            ("num_labels", self.num_labels(), MAX_LABELS),
            (
                "image_size",
                self.image_size.hw().0.max(self.image_size.hw().1),
                MAX_IMAGE_SIDE,
            ),
        ];
        if let Some((name, value, limit)) = too_large.iter().find(|(_, v, limit)| v > limit) {
            return Err(Error::Config(format!(
                "{name} {value} is above this engine's limit of {limit}"
            )));
        }
        let (ph, pw) = self.patch_size.hw();
        let (ih, iw) = self.image_size.hw();
        if ph == 0 || pw == 0 || ih < ph || iw < pw {
            return Err(Error::Config(format!(
                "image_size {ih}x{iw} holds no {ph}x{pw} patch"
            )));
        }
        if ph != pw {
            return Err(Error::Config(format!(
                "non-square patch_size {ph}x{pw} is not supported"
            )));
        }
        let patches = (ih / ph).saturating_mul(iw / pw);
        if patches >= MAX_TOKENS {
            return Err(Error::Config(format!(
                "image_size {ih}x{iw} in {ph}x{pw} patches makes {patches} tokens, above this engine's limit of {MAX_TOKENS}"
            )));
        }
        if self.parameter_count().is_none() {
            return Err(Error::Config(
                "the model's sizes multiply past this machine's address space".into(),
            ));
        }
        Ok(())
    }

    /// How many weights the sizes call for (bare model and head), or `None` when counting
    /// them overflows. The caps in `validate` keep every single product in range on 64-bit
    /// targets; this catches their sum, and narrower targets.
    pub fn parameter_count(&self) -> Option<usize> {
        let mul = |factors: &[usize]| {
            factors
                .iter()
                .try_fold(1usize, |product, &f| product.checked_mul(f))
        };
        let (d, i, p) = (self.hidden_size, self.intermediate_size, self.patch());
        let (gh, gw) = self.grid();
        let tokens = mul(&[gh, gw])?.checked_add(1)?;
        let per_layer = [
            mul(&[3, d, d])?,
            mul(&[d, d])?,
            mul(&[2, d, i])?,
            mul(&[10, d])?,
            i,
        ]
        .into_iter()
        .try_fold(0usize, usize::checked_add)?;
        [
            mul(&[self.num_hidden_layers, per_layer])?,
            mul(&[d, self.num_channels, p, p])?,
            mul(&[tokens, d])?,
            mul(&[self.num_labels(), d])?,
            mul(&[6, d])?,
        ]
        .into_iter()
        .try_fold(0usize, usize::checked_add)
    }

    /// The `hidden_act` function; an unknown name is an error that names it.
    pub fn activation(&self) -> Result<Activation> {
        Activation::from_name(&self.hidden_act)
            .ok_or_else(|| Error::Config(format!("unsupported hidden_act \"{}\"", self.hidden_act)))
    }

    /// Number of classifier outputs: `num_labels`, else the size of `id2label`, else
    /// transformers' default of 2.
    pub fn num_labels(&self) -> usize {
        self.num_labels
            .or_else(|| self.id2label.as_ref().map(|m| m.len()))
            .unwrap_or(2)
    }

    /// The name of class `index`: `id2label`'s, else transformers' `LABEL_{index}`.
    pub fn label_name(&self, index: usize) -> String {
        self.id2label
            .as_ref()
            .and_then(|m| m.get(&index.to_string()))
            .cloned()
            .unwrap_or_else(|| format!("LABEL_{index}"))
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Side of a patch in pixels.
    pub fn patch(&self) -> usize {
        self.patch_size.hw().0
    }

    /// Patches along (height, width) of the configured image size.
    pub fn grid(&self) -> (usize, usize) {
        let (h, w) = self.image_size.hw();
        (h / self.patch(), w / self.patch())
    }

    /// Whether `architectures` names the classification head.
    pub fn is_classifier(&self) -> bool {
        self.architectures
            .iter()
            .flatten()
            .any(|a| a.ends_with("ForImageClassification"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_transformers_defaults() {
        let c = ViTMSNConfig::from_json("{}").unwrap();
        assert_eq!(
            (c.hidden_size, c.num_hidden_layers, c.num_attention_heads),
            (768, 12, 12)
        );
        assert_eq!((c.intermediate_size, c.num_channels), (3072, 3));
        assert_eq!(c.image_size.hw(), (224, 224));
        assert_eq!(c.grid(), (14, 14));
        assert_eq!(c.layer_norm_eps, 1e-6);
        assert!(c.qkv_bias);
        assert_eq!(c.activation().unwrap(), Activation::Gelu);
        assert_eq!(c.num_labels(), 2);
    }

    #[test]
    fn labels_come_from_id2label() {
        let c = ViTMSNConfig::from_json(
            r#"{"id2label": {"0": "a", "1": "b", "2": "c"}, "hidden_dropout_prob": 0.1}"#,
        )
        .unwrap();
        assert_eq!(c.num_labels(), 3);
    }

    #[test]
    fn unknown_activation_is_named() {
        let err = ViTMSNConfig::from_json(r#"{"hidden_act": "gelu_mystery"}"#).unwrap_err();
        assert!(err.to_string().contains("gelu_mystery"), "{err}");
    }

    #[test]
    fn sizes_past_the_limits_are_refused_before_anything_is_allocated() {
        for (json, expected) in [
            (
                r#"{"hidden_size": 2147483648, "num_attention_heads": 1}"#,
                "hidden_size 2147483648 is above",
            ),
            (
                r#"{"intermediate_size": 18446744073709551615}"#,
                "intermediate_size",
            ),
            (
                r#"{"num_hidden_layers": 1000000}"#,
                "num_hidden_layers 1000000 is above",
            ),
            (
                r#"{"image_size": [9223372036854775816, 2], "patch_size": 1}"#,
                "image_size 9223372036854775816 is above",
            ),
            (
                r#"{"image_size": 1048576, "patch_size": 1}"#,
                "tokens, above",
            ),
            (
                r#"{"num_labels": 100000000}"#,
                "num_labels 100000000 is above",
            ),
        ] {
            let err = ViTMSNConfig::from_json(json).unwrap_err().to_string();
            assert!(err.contains(expected), "{json}: {err}");
        }
        let largest = ViTMSNConfig::from_json(
            r#"{"hidden_size": 1048576, "intermediate_size": 1048576, "num_hidden_layers": 4096, "num_attention_heads": 1}"#,
        )
        .unwrap();
        assert!(largest.parameter_count().is_some());
    }

    #[test]
    fn a_config_must_be_an_object() {
        for json in ["[]", "[768, 12]", "7", "null"] {
            let err = ViTMSNConfig::from_json(json).unwrap_err().to_string();
            assert!(err.contains("expected a JSON object"), "{json}: {err}");
        }
    }

    #[test]
    fn heads_must_divide_hidden() {
        let err = ViTMSNConfig::from_json(r#"{"hidden_size": 10, "num_attention_heads": 3}"#)
            .unwrap_err();
        assert!(err.to_string().contains("not a multiple"), "{err}");
    }
}
