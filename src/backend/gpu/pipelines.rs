//! The WGSL sources, their specialisation (prepended constants and `//#if` sections), and
//! the compute pipelines built from them once and cached by a readable key.

use super::storage;
use crate::backend::Precision;
use crate::error::{Error, Result};
use std::collections::HashMap;

pub(super) const GEMM: &str = include_str!("../../../shaders/gemm.wgsl");
pub(super) const ATTENTION: &str = include_str!("../../../shaders/attention.wgsl");
pub(super) const LAYERNORM: &str = include_str!("../../../shaders/layernorm.wgsl");
pub(super) const EMBED: &str = include_str!("../../../shaders/embed.wgsl");

/// One specialisation of a shader entry point.
pub(super) struct ShaderVariant<'a> {
    pub source: &'static str,
    pub entry: &'static str,
    /// Names the variant in its cache key, after the entry point and the storage type:
    /// must tell apart every choice of `constants` and `flags`.
    pub tag: String,
    /// Prepended as `const NAME = value;` (values in WGSL syntax).
    pub constants: &'a [(&'static str, String)],
    /// The `//#if FLAG` sections kept.
    pub flags: &'a [&'static str],
}

pub(super) struct PipelineCache {
    precision: Precision,
    pipelines: HashMap<String, wgpu::ComputePipeline>,
}

impl PipelineCache {
    pub fn new(precision: Precision) -> Self {
        Self {
            precision,
            pipelines: HashMap::new(),
        }
    }

    /// The pipeline of `variant`, built on first use, and its key, e.g.
    /// `gemm_f32_64x64x32_4x4_vec4_a_vec4_w_bias_gelu`.
    pub fn get(
        &mut self,
        device: &wgpu::Device,
        variant: &ShaderVariant,
    ) -> Result<(wgpu::ComputePipeline, String)> {
        let mut key = format!("{}_{}", variant.entry, storage::wgsl_type(self.precision));
        if !variant.tag.is_empty() {
            key = format!("{key}_{}", variant.tag);
        }
        if let Some(pipeline) = self.pipelines.get(&key) {
            return Ok((pipeline.clone(), key));
        }
        let source = specialise(self.precision, variant);
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&key),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&key),
            layout: None,
            module: &module,
            entry_point: Some(variant.entry),
            // Every shader writes its workgroup memory before reading it.
            compilation_options: wgpu::PipelineCompilationOptions {
                zero_initialize_workgroup_memory: false,
                ..Default::default()
            },
            cache: None,
        });
        if let Some(error) = pollster::block_on(scope.pop()) {
            return Err(Error::Backend(format!("shader {key}: {error}")));
        }
        self.pipelines.insert(key.clone(), pipeline.clone());
        Ok((pipeline, key))
    }
}

/// The source of `variant`: the storage type and constants, then the shader with only the
/// `//#if` sections of its flags.
fn specialise(precision: Precision, variant: &ShaderVariant) -> String {
    let mut out = String::new();
    if precision == Precision::F16 {
        out.push_str("enable f16;\n");
    }
    out.push_str(&format!(
        "alias elem = {};\n",
        storage::wgsl_type(precision)
    ));
    for (name, value) in variant.constants {
        out.push_str(&format!("const {name} = {value};\n"));
    }
    out.push_str(&keep_sections(variant.source, variant.flags));
    out
}

/// Resolves `//#if FLAG`, `//#else` and `//#endif` lines (nestable): a line is kept when
/// every enclosing section is on.
fn keep_sections(source: &str, flags: &[&str]) -> String {
    let mut open: Vec<bool> = Vec::new();
    let mut out = String::with_capacity(source.len());
    for line in source.lines() {
        let directive = line.trim();
        if let Some(flag) = directive.strip_prefix("//#if ") {
            open.push(flags.contains(&flag.trim()));
        } else if directive == "//#else" {
            let top = open.last_mut().expect("//#else without //#if");
            *top = !*top;
        } else if directive == "//#endif" {
            open.pop().expect("//#endif without //#if");
        } else if open.iter().all(|&on| on) {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(open.is_empty(), "unclosed //#if");
    out
}

#[cfg(test)]
mod tests {
    use super::keep_sections;

    #[test]
    fn sections_follow_flags_and_nest() {
        let source =
            "a\n//#if X\nx\n//#if Y\nxy\n//#else\nx-not-y\n//#endif\n//#else\nnot-x\n//#endif\nb\n";
        assert_eq!(keep_sections(source, &["X"]), "a\nx\nx-not-y\nb\n");
        assert_eq!(keep_sections(source, &["X", "Y"]), "a\nx\nxy\nb\n");
        assert_eq!(keep_sections(source, &["Y"]), "a\nnot-x\nb\n");
    }

    #[test]
    fn every_shader_has_balanced_sections() {
        for source in [
            super::GEMM,
            super::ATTENTION,
            super::LAYERNORM,
            super::EMBED,
        ] {
            keep_sections(source, &[]);
        }
    }
}
