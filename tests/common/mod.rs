//! Shared by the integration tests: the committed transformers fixtures and how close an
//! engine output must be to them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use vitmsn::internals::io::read_inputs;
use vitmsn::internals::safetensors_file::SafetensorsFile;
use vitmsn::{
    BackendKind, BackendOptions, ForwardInput, ForwardOutput, Tensor, ViTMSN, ViTMSNConfig, Weights,
};

/// `tests/fixtures` of this checkout, or `VITMSN_FIXTURES` where set: a test binary copied
/// to another machine (tools/gpu_check.sh) finds the fixtures of the tree it runs in.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("VITMSN_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    }
}

/// Every fixture case directory, sorted.
pub fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").exists())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 20,
        "expected the committed fixture cases, found {}",
        cases.len()
    );
    cases
}

/// The options a case was generated with.
pub struct CaseOptions {
    pub output_hidden_states: bool,
    pub output_attentions: bool,
    pub interpolate_pos_encoding: bool,
}

pub fn case_options(case: &Path) -> CaseOptions {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("case.json")).unwrap()).unwrap();
    let flag = |k: &str| json[k].as_bool().unwrap_or(false);
    CaseOptions {
        output_hidden_states: flag("output_hidden_states"),
        output_attentions: flag("output_attentions"),
        interpolate_pos_encoding: flag("interpolate_pos_encoding"),
    }
}

/// transformers' outputs for a case, by name.
pub fn expected(case: &Path) -> Vec<(String, Tensor)> {
    let file = SafetensorsFile::open(&case.join("expected.safetensors")).unwrap();
    let mut out: Vec<(String, Tensor)> = file
        .tensors
        .iter()
        .map(|(name, e)| {
            (
                name.clone(),
                Tensor::new(e.shape.clone(), file.f32_data(e, name).unwrap().to_vec()),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Runs a case through the library on `backend`.
pub fn run_case(case: &Path, backend: BackendKind, options: &BackendOptions) -> ForwardOutput {
    let model = ViTMSN::from_dir(case.join("model"), backend, options).unwrap();
    forward_case(case, &model)
}

/// Runs a case's inputs, with its options, through `model`.
pub fn forward_case(case: &Path, model: &ViTMSN) -> ForwardOutput {
    let o = case_options(case);
    let spec = model.input_spec(o.interpolate_pos_encoding);
    let mut input = read_inputs(&case.join("inputs.safetensors"), &spec).unwrap();
    input.output_hidden_states = o.output_hidden_states;
    input.output_attentions = o.output_attentions;
    input.interpolate_pos_encoding = o.interpolate_pos_encoding;
    model
        .forward(&input)
        .unwrap_or_else(|e| panic!("{}: {e}", case.display()))
}

/// The named tensors of an output, as the CLI writes them.
pub fn named_outputs(out: &ForwardOutput) -> Vec<(String, Tensor)> {
    let mut named = Vec::new();
    if let Some(t) = &out.last_hidden_state {
        named.push(("last_hidden_state".to_string(), t.clone()));
    }
    if let Some(t) = &out.logits {
        named.push(("logits".to_string(), t.clone()));
    }
    if let Some(l) = out.loss {
        named.push(("loss".to_string(), Tensor::new(vec![], vec![l])));
    }
    for (i, t) in out.hidden_states.iter().enumerate() {
        named.push((format!("hidden_states.{i}"), t.clone()));
    }
    for (i, t) in out.attentions.iter().enumerate() {
        named.push((format!("attentions.{i}"), t.clone()));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// max|ours − reference| / max(1, max|reference|).
pub fn relative_error(ours: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(ours.shape, reference.shape);
    let diff = ours
        .data
        .iter()
        .zip(&reference.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let scale = reference
        .data
        .iter()
        .map(|v| v.abs())
        .fold(1.0f32, f32::max);
    if ours.data.iter().any(|v| !v.is_finite()) {
        return f32::INFINITY;
    }
    diff / scale
}

/// Checks every output of every case against transformers within `tolerance`; panics
/// listing each failing tensor. Prints the worst error, which the tolerances are set from.
pub fn check_all_cases(backend: BackendKind, options: &BackendOptions, tolerance: f32) {
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut worst = (0.0f32, String::new());
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let ours = named_outputs(&run_case(&case, backend, options));
        let reference = expected(&case);
        let ours_names: Vec<&String> = ours.iter().map(|(n, _)| n).collect();
        let ref_names: Vec<&String> = reference.iter().map(|(n, _)| n).collect();
        assert_eq!(ours_names, ref_names, "{name}: output names");
        for ((tensor_name, a), (_, b)) in ours.iter().zip(&reference) {
            let err = relative_error(a, b);
            checked += 1;
            if err > worst.0 {
                worst = (err, format!("{name}/{tensor_name}"));
            }
            if err.is_nan() || err > tolerance {
                failures.push(format!("{name}/{tensor_name}: relative error {err:e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} tensors over {tolerance:e} on {backend:?} with {options:?}:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{checked} tensors within {tolerance:e} on {backend:?} with {options:?}; worst {:e} ({})",
        worst.0, worst.1
    );
}

/// Whether the GPU backend can run with `options` here. Without an adapter, or with one
/// that lacks what `options` needs (SHADER_F16 for f16), the GPU tests fail under `CI=true`
/// (lavapipe has both) and are skipped elsewhere, printing why.
#[cfg(feature = "gpu")]
pub fn gpu_ready(options: &BackendOptions) -> bool {
    let plain = BackendOptions {
        precision: Default::default(),
        ..options.clone()
    };
    if let Err(e) = vitmsn::internals::backend::create(BackendKind::Gpu, &plain) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no GPU adapter in CI: {e}"
        );
        eprintln!("skipped: {e}");
        return false;
    }
    match vitmsn::internals::backend::create(BackendKind::Gpu, options) {
        Ok(_) => true,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the GPU adapter in CI cannot run {options:?}: {e}"
            );
            eprintln!("skipped: {e}");
            false
        }
    }
}

/// A scratch directory, removed when dropped so that test runs leave nothing behind.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vitmsn-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the `vitmsn` binary this test run built.
pub fn vitmsn(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vitmsn"))
        .args(args)
        .output()
        .unwrap()
}

/// A file of a fixture case, as a command-line argument.
pub fn fixture(case: &str, file: &str) -> String {
    fixtures_dir().join(case).join(file).display().to_string()
}

/// The CLI's error contract: exit code 1 and one line on stderr, no panic. Returns the line.
pub fn one_error_line(out: &std::process::Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{what}: stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{what}: not one line: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    stderr
}

/// A generated model with vit-msn-small's attention at its real sequence length (224×224
/// images: 197 tokens, heads of 64) and `hidden / 64` heads, with an input of `batch` images
/// that asks for every output and uses the mask token and a head mask.
pub fn full_size_sequence(
    hidden: usize,
    layers: usize,
    intermediate: usize,
    batch: usize,
) -> (ViTMSNConfig, Weights, ForwardInput) {
    let heads = hidden / 64;
    let config = ViTMSNConfig {
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        intermediate_size: intermediate,
        ..Default::default()
    };
    let pixels: Vec<f32> = (0..batch * 3 * 224 * 224)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let head_mask = (0..heads).map(|h| [1.0, 0.0, 0.5][h % 3]).collect();
    let input = ForwardInput {
        pixel_values: Tensor::new(vec![batch, 3, 224, 224], pixels),
        bool_masked_pos: Some((0..batch * 196).map(|i| i % 5 == 0).collect()),
        head_mask: Some(Tensor::new(vec![heads], head_mask)),
        output_attentions: true,
        output_hidden_states: true,
        ..Default::default()
    };
    (config, Weights::random(7), input)
}

/// The named outputs of `input` through a model of `config` and `weights` on `kind`.
pub fn run_generated(
    config: &ViTMSNConfig,
    weights: &Weights,
    input: &ForwardInput,
    kind: BackendKind,
    options: &BackendOptions,
) -> Vec<(String, Tensor)> {
    let model = ViTMSN::builder()
        .backend(kind)
        .options(options.clone())
        .build(config.clone(), weights)
        .unwrap();
    named_outputs(&model.forward(input).unwrap())
}

/// Checks `ours` against `reference` output by output: the same names, and each within
/// `tolerance` of max|reference| (all zero fails). Returns the worst error, for measuring.
pub fn check_outputs(
    ours: &[(String, Tensor)],
    reference: &[(String, Tensor)],
    tolerance: f32,
    what: &str,
) -> f32 {
    let names = |outputs: &[(String, Tensor)]| -> Vec<String> {
        outputs.iter().map(|(name, _)| name.clone()).collect()
    };
    assert_eq!(names(ours), names(reference), "{what}: outputs");
    let mut worst = 0.0f32;
    for ((name, ours), (_, expected)) in ours.iter().zip(reference) {
        assert_eq!(ours.shape, expected.shape, "{what}: {name}");
        let scale = expected.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = ours
            .data
            .iter()
            .zip(&expected.data)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        let err = diff / scale;
        assert!(
            scale > 0.0 && err <= tolerance,
            "{what}: {name} off by {diff:e} of {scale:e}, over {tolerance:e}"
        );
        worst = worst.max(err);
    }
    eprintln!("{what}: worst {worst:e}");
    worst
}
