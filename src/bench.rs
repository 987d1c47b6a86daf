//! `vitmsn bench`: times whole forwards of a loaded model, weights already loaded.

use crate::config::{Size2, ViTMSNConfig};
use crate::error::{Error, Result};
use crate::executor::OpTime;
use crate::model::{ForwardInput, ViTMSN};
use crate::tensor::Tensor;
use crate::Isa;
use serde::Serialize;
use std::time::Instant;

/// The published ViTMSN architectures, by the name `--arch` takes.
pub const ARCHITECTURES: [&str; 5] = [
    "vit-msn-small",
    "vit-msn-base",
    "vit-msn-large",
    "vit-msn-base-4",
    "vit-msn-large-7",
];

/// The config of a named architecture (facebook/vit-msn-*: 224×224 images).
pub fn arch_config(name: &str) -> Result<ViTMSNConfig> {
    let (hidden, layers, heads, patch) = match name {
        "vit-msn-small" => (384, 12, 6, 16),
        "vit-msn-base" => (768, 12, 12, 16),
        "vit-msn-large" => (1024, 24, 16, 16),
        "vit-msn-base-4" => (768, 12, 12, 4),
        "vit-msn-large-7" => (1024, 24, 16, 7),
        other => {
            return Err(Error::InvalidOption(format!(
                "unknown architecture \"{other}\" (expected one of {})",
                ARCHITECTURES.join(", ")
            )))
        }
    };
    Ok(ViTMSNConfig {
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        intermediate_size: 4 * hidden,
        patch_size: Size2::Square(patch),
        ..ViTMSNConfig::default()
    })
}

/// Timings of `iters` forwards of one batch.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub backend: String,
    /// The CPU kernels' instruction set, for backends that choose one.
    pub isa: Option<&'static str>,
    /// `f32`, `f16`, `bf16` or `int8`.
    pub precision: &'static str,
    pub threads: usize,
    pub batch: usize,
    pub iters: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub images_per_s: f64,
    pub gflop_per_image: f64,
    pub gflop_per_s: f64,
    /// Where a forward's time goes, by kind of op, when the bench was profiled.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<OpProfile>,
}

/// One kind of op in a profiled bench, timed in the same forwards as the whole.
#[derive(Clone, Debug, Serialize)]
pub struct OpProfile {
    /// `Op::name`.
    pub op: &'static str,
    /// Ops of this kind in one forward.
    pub count: usize,
    /// The median over the forwards of the time they took together.
    pub ms: f64,
    /// Their floating-point rate at that median, for ops with matrix products.
    pub gflop_per_s: Option<f64>,
}

impl BenchReport {
    /// One line of JSON; `ops` appears only when the bench was profiled.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a bench report serialises")
    }
}

/// The op kinds of the forwards `runs` (each the op times of one forward, in graph
/// order), in order of first appearance, with the median of each kind's total.
fn profile(runs: &[Vec<OpTime>]) -> Vec<OpProfile> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    let mut kinds: Vec<&'static str> = Vec::new();
    for op in first {
        if !kinds.contains(&op.name) {
            kinds.push(op.name);
        }
    }
    kinds
        .into_iter()
        .map(|name| {
            let of_kind = |run: &[OpTime]| {
                let ops = run.iter().filter(|o| o.name == name);
                let seconds: f64 = ops.clone().map(|o| o.seconds).sum();
                let flops: Option<f64> = ops.clone().map(|o| o.flops).sum();
                (ops.count(), seconds, flops)
            };
            let (count, _, flops) = of_kind(first);
            let mut seconds: Vec<f64> = runs.iter().map(|run| of_kind(run).1).collect();
            seconds.sort_by(f64::total_cmp);
            let median = seconds[seconds.len() / 2];
            OpProfile {
                op: name,
                count,
                ms: median * 1e3,
                gflop_per_s: flops.map(|f| f / median / 1e9),
            }
        })
        .collect()
}

/// Runs one warm-up forward, then `iters` timed ones, on deterministic pixels; with
/// `profile_ops`, also times each op of the timed forwards (see [`OpProfile`]).
pub fn run(
    model: &mut ViTMSN,
    model_name: &str,
    batch: usize,
    iters: usize,
    profile_ops: bool,
) -> Result<BenchReport> {
    // The batch is checked against the memory budget before its pixels are made.
    model.reserve(batch)?;
    let c = model.config();
    let (h, w) = c.image_size.hw();
    let len = batch * c.num_channels * h * w;
    let pixels: Vec<f32> = (0..len)
        .map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0)
        .collect();
    let input = ForwardInput {
        pixel_values: Tensor::new(vec![batch, c.num_channels, h, w], pixels),
        ..Default::default()
    };
    let gflop_per_image = model.flops(batch)? / batch as f64 / 1e9;
    model.forward(&input)?;
    model.time_ops(profile_ops)?;
    // Grown as the forwards run: a count from the command line reserves nothing.
    let mut times = Vec::new();
    let mut op_times = Vec::new();
    for _ in 0..iters.max(1) {
        let start = Instant::now();
        model.forward(&input)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        op_times.extend(model.op_times());
    }
    model.time_ops(false)?;
    times.sort_by(f64::total_cmp);
    let median_ms = times[times.len() / 2];
    Ok(BenchReport {
        model: model_name.to_string(),
        backend: model.backend_name().to_string(),
        isa: model.backend_isa().map(Isa::name),
        precision: model.precision().name(),
        threads: model.backend_threads(),
        batch,
        iters: times.len(),
        median_ms,
        min_ms: times[0],
        images_per_s: batch as f64 / (median_ms / 1e3),
        gflop_per_image,
        gflop_per_s: gflop_per_image * batch as f64 / (median_ms / 1e3),
        ops: profile(&op_times),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_takes_each_kind_once_with_the_median_of_its_totals() {
        let op = |name, flops, ms: f64| OpTime {
            name,
            flops,
            seconds: ms / 1e3,
        };
        let runs: Vec<Vec<OpTime>> = [1.0, 3.0, 2.0]
            .iter()
            .map(|&ms| {
                vec![
                    op("Linear", Some(1e6), ms),
                    op("LayerNorm", None, 0.5),
                    op("Linear", Some(3e6), ms),
                ]
            })
            .collect();
        let ops = profile(&runs);
        assert_eq!(ops.len(), 2);
        let (linear, norm) = (&ops[0], &ops[1]);
        assert_eq!(
            (linear.op, linear.count, norm.op, norm.count),
            ("Linear", 2, "LayerNorm", 1)
        );
        // Totals per run: 2, 6 and 4 ms; the median is 4 ms, over 4 MFLOP.
        assert!((linear.ms - 4.0).abs() < 1e-9 && (norm.ms - 0.5).abs() < 1e-9);
        assert!((linear.gflop_per_s.unwrap() - 1.0).abs() < 1e-9);
        assert!(norm.gflop_per_s.is_none());
        assert!(profile(&[]).is_empty());
    }

    #[test]
    fn architectures_have_the_published_token_counts() {
        let tokens = |n| {
            let (gh, gw) = arch_config(n).unwrap().grid();
            gh * gw + 1
        };
        assert_eq!(tokens("vit-msn-small"), 197);
        assert_eq!(tokens("vit-msn-base-4"), 3137);
        assert_eq!(tokens("vit-msn-large-7"), 1025);
    }

    #[test]
    fn forward_flops_match_the_published_counts() {
        // ≈ 9.2 GFLOP per image for vit-msn-small, ≈ 35 for base.
        for (arch, gflop, tolerance) in [("vit-msn-small", 9.2, 0.3), ("vit-msn-base", 35.0, 0.6)] {
            let backend = crate::backend::create(
                crate::BackendKind::Scalar,
                &crate::BackendOptions::default(),
            )
            .unwrap();
            let weights = crate::weights::Weights::random(0);
            let model = ViTMSN::new(arch_config(arch).unwrap(), &weights, backend).unwrap();
            let per_image = model.flops(2).unwrap() / 2.0 / 1e9;
            assert!((per_image - gflop).abs() < tolerance, "{arch}: {per_image}");
        }
    }
}
