//! `vitmsn bench`: times whole forwards of a loaded model, weights already loaded.

use crate::config::{Size2, ViTMSNConfig};
use crate::error::{Error, Result};
use crate::model::{ForwardInput, ViTMSN};
use crate::tensor::Tensor;
use crate::Isa;
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
            return Err(Error::Usage(format!(
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

/// Multiply-adds ×2 of one image's forward through the encoder (the matrix products and
/// attention; norms and activations are not counted).
pub fn flops_per_image(c: &ViTMSNConfig) -> f64 {
    let (gh, gw) = c.grid();
    let patches = (gh * gw) as f64;
    let t = patches + 1.0;
    let (d, i) = (c.hidden_size as f64, c.intermediate_size as f64);
    let patch_k = (c.num_channels * c.patch() * c.patch()) as f64;
    let per_layer = 2.0 * t * d * (3.0 * d + d + 2.0 * i) + 4.0 * t * t * d;
    2.0 * patches * patch_k * d + c.num_hidden_layers as f64 * per_layer
}

/// Timings of `iters` forwards of one batch.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub model: String,
    pub backend: String,
    /// The CPU kernels' instruction set, for backends that choose one.
    pub isa: Option<&'static str>,
    pub threads: usize,
    pub batch: usize,
    pub iters: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub images_per_s: f64,
    pub gflop_per_image: f64,
    pub gflop_per_s: f64,
}

impl BenchReport {
    pub fn to_json(&self) -> String {
        format!(
            "{{\"model\":{:?},\"backend\":{:?},\"isa\":{},\"threads\":{},\"batch\":{},\"iters\":{},\"median_ms\":{:.3},\"min_ms\":{:.3},\"images_per_s\":{:.3},\"gflop_per_image\":{:.3},\"gflop_per_s\":{:.2}}}",
            self.model, self.backend, self.isa.map_or("null".to_string(), |isa| format!("{isa:?}")), self.threads, self.batch, self.iters, self.median_ms, self.min_ms, self.images_per_s, self.gflop_per_image, self.gflop_per_s
        )
    }
}

/// Runs one warm-up forward, then `iters` timed ones, on deterministic pixels.
pub fn run(
    model: &mut ViTMSN,
    model_name: &str,
    batch: usize,
    iters: usize,
) -> Result<BenchReport> {
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
    let gflop_per_image = flops_per_image(c) / 1e9;
    model.forward(&input)?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let start = Instant::now();
        model.forward(&input)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median_ms = times[times.len() / 2];
    Ok(BenchReport {
        model: model_name.to_string(),
        backend: model.backend_name().to_string(),
        isa: model.backend_isa().map(Isa::name),
        threads: model.backend_threads(),
        batch,
        iters: times.len(),
        median_ms,
        min_ms: times[0],
        images_per_s: batch as f64 / (median_ms / 1e3),
        gflop_per_image,
        gflop_per_s: gflop_per_image * batch as f64 / (median_ms / 1e3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_have_the_published_token_counts() {
        let tokens = |n| {
            let (gh, gw) = arch_config(n).unwrap().grid();
            gh * gw + 1
        };
        assert_eq!(tokens("vit-msn-small"), 197);
        assert_eq!(tokens("vit-msn-base-4"), 3137);
        assert_eq!(tokens("vit-msn-large-7"), 1025);
        // ≈ 9.2 GFLOP per image for vit-msn-small, ≈ 35 for base.
        assert!((flops_per_image(&arch_config("vit-msn-small").unwrap()) / 1e9 - 9.2).abs() < 0.3);
        assert!((flops_per_image(&arch_config("vit-msn-base").unwrap()) / 1e9 - 35.0).abs() < 0.6);
    }
}
