//! What a forward means to a user: image embeddings taken from the backbone's hidden
//! states, and labels with their probabilities from a classifier's logits.

use crate::config::{ProblemType, ViTMSNConfig};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::str::FromStr;

/// An image embedding taken from the backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// The CLS token of the final-layernormed `last_hidden_state`: what transformers users
    /// take (`outputs.last_hidden_state[:, 0]`).
    Cls,
    /// The CLS token of the last layer before the final LayerNorm
    /// (`outputs.hidden_states[-1][:, 0]`): what MSN's own linear and few-shot evaluation uses.
    ClsPrenorm,
    /// The mean of the patch tokens of `last_hidden_state` (the CLS token excluded).
    Mean,
}

impl Feature {
    /// Every feature, in the order the CLI writes them.
    pub const ALL: [Feature; 3] = [Feature::Cls, Feature::ClsPrenorm, Feature::Mean];

    /// The name `--features` takes.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Cls => "cls",
            Feature::ClsPrenorm => "cls_prenorm",
            Feature::Mean => "mean",
        }
    }

    /// The tensor name `vitmsn embed` writes it under.
    pub fn tensor_name(self) -> &'static str {
        match self {
            Feature::Cls => "cls_embeddings",
            Feature::ClsPrenorm => "cls_prenorm_embeddings",
            Feature::Mean => "mean_embeddings",
        }
    }
}

impl FromStr for Feature {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Feature::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| {
                Error::Input(format!(
                    "unknown feature \"{name}\" (expected one of {})",
                    Feature::ALL.map(Feature::name).join(", ")
                ))
            })
    }
}

/// Embeddings of a batch: for each requested feature, `[batch, hidden]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Embeddings {
    /// Each requested feature with its `[batch, hidden]` values, in request order.
    pub features: Vec<(Feature, Tensor)>,
}

impl Embeddings {
    /// Takes `features` from `last_hidden_state` and, for [`Feature::ClsPrenorm`], from the
    /// last layer's output before the final LayerNorm; both `[batch, tokens, dim]`.
    pub(crate) fn from_hidden_states(
        features: &[Feature],
        batch: usize,
        tokens: usize,
        dim: usize,
        last_hidden_state: &[f32],
        before_norm: &[f32],
    ) -> Self {
        let cls = |states: &[f32]| -> Vec<f32> {
            states
                .chunks_exact(tokens * dim)
                .flat_map(|image| &image[..dim])
                .copied()
                .collect()
        };
        let mean = |states: &[f32]| -> Vec<f32> {
            let patches = (tokens - 1) as f64;
            states
                .chunks_exact(tokens * dim)
                .flat_map(|image| {
                    let mut sums = vec![0f64; dim];
                    for token in image[dim..].chunks_exact(dim) {
                        sums.iter_mut()
                            .zip(token)
                            .for_each(|(s, &x)| *s += x as f64);
                    }
                    sums.into_iter().map(move |s| (s / patches) as f32)
                })
                .collect()
        };
        let features = features
            .iter()
            .map(|&feature| {
                let data = match feature {
                    Feature::Cls => cls(last_hidden_state),
                    Feature::ClsPrenorm => cls(before_norm),
                    Feature::Mean => mean(last_hidden_state),
                };
                (feature, Tensor::new(vec![batch, dim], data))
            })
            .collect();
        Self { features }
    }

    /// The embeddings of `feature`, `[batch, hidden]`, if they were asked for.
    pub fn get(&self, feature: Feature) -> Option<&Tensor> {
        self.features
            .iter()
            .find(|(f, _)| *f == feature)
            .map(|(_, t)| t)
    }

    /// Appends another batch's rows, feature by feature (both must hold the same features).
    pub fn append(&mut self, other: Embeddings) {
        if self.features.is_empty() {
            *self = other;
            return;
        }
        for ((_, mine), (_, theirs)) in self.features.iter_mut().zip(other.features) {
            mine.shape[0] += theirs.shape[0];
            mine.data.extend(theirs.data);
        }
    }
}

/// One label of a classifier's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The index into the logits.
    pub class: usize,
    /// `id2label`'s name for it, else transformers' `LABEL_{i}`.
    pub label: String,
    /// Softmax (or sigmoid) of the logit.
    pub probability: f32,
}

/// Each row of `logits` `[batch, labels]` as its `k` most probable labels, most probable
/// first (ties keep the lower index first).
pub(crate) fn top_k(logits: &Tensor, config: &ViTMSNConfig, k: usize) -> Vec<Vec<Prediction>> {
    let labels = logits.shape[1];
    let independent =
        config.problem_type == Some(ProblemType::MultiLabelClassification) || labels == 1;
    logits
        .data
        .chunks_exact(labels)
        .map(|row| {
            let probabilities = if independent {
                row.iter().map(|&x| sigmoid(x)).collect()
            } else {
                softmax(row)
            };
            let mut order: Vec<usize> = (0..labels).collect();
            order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
            order
                .into_iter()
                .take(k)
                .map(|class| Prediction {
                    class,
                    label: config.label_name(class),
                    probability: probabilities[class],
                })
                .collect()
        })
        .collect()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = row.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_come_from_the_cls_row_and_the_patch_mean() {
        // Two images, three tokens (CLS + two patches), two dims.
        let last = [1., 2., 3., 4., 5., 6., 10., 20., 30., 40., 50., 60.];
        let before = last.map(|x| -x);
        let e = Embeddings::from_hidden_states(
            &[Feature::Mean, Feature::Cls, Feature::ClsPrenorm],
            2,
            3,
            2,
            &last,
            &before,
        );
        assert_eq!(e.get(Feature::Cls).unwrap().data, [1., 2., 10., 20.]);
        assert_eq!(
            e.get(Feature::ClsPrenorm).unwrap().data,
            [-1., -2., -10., -20.]
        );
        assert_eq!(e.get(Feature::Mean).unwrap().data, [4., 5., 40., 50.]);
        assert_eq!(e.get(Feature::Mean).unwrap().shape, [2, 2]);
        let mut all = Embeddings::default();
        all.append(e.clone());
        all.append(e);
        assert_eq!(all.get(Feature::Cls).unwrap().shape, [4, 2]);
    }

    #[test]
    fn top_k_orders_by_probability_and_names_labels() {
        let config =
            ViTMSNConfig::from_json(r#"{"id2label": {"0": "cat", "1": "dog", "2": "fox"}}"#)
                .unwrap();
        let logits = Tensor::new(vec![2, 3], vec![0., 2., 1., 3., 3., -1.]);
        let top = top_k(&logits, &config, 2);
        assert_eq!(top[0][0].label, "dog");
        assert_eq!(top[0][1].label, "fox");
        assert_eq!((top[1][0].class, top[1][1].class), (0, 1));
        let p: f32 = softmax(&[0., 2., 1.]).iter().sum();
        assert!((p - 1.0).abs() < 1e-6);
        assert!((top[1][0].probability - top[1][1].probability).abs() < 1e-7);
    }

    #[test]
    fn feature_names_parse() {
        assert_eq!(
            "cls_prenorm".parse::<Feature>().unwrap(),
            Feature::ClsPrenorm
        );
        let err = "clss".parse::<Feature>().unwrap_err().to_string();
        assert!(err.contains("cls, cls_prenorm, mean"), "{err}");
    }
}
