//! Shared by the integration tests: the committed transformers fixtures and how close an
//! engine output must be to them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use vitmsn::internals::io::read_inputs;
use vitmsn::internals::safetensors_file::SafetensorsFile;
use vitmsn::{BackendKind, BackendOptions, ForwardOutput, Tensor, ViTMSN};

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
/// listing each failing tensor.
pub fn check_all_cases(backend: BackendKind, options: &BackendOptions, tolerance: f32) {
    let mut failures = Vec::new();
    let mut checked = 0;
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
    eprintln!("{checked} tensors within {tolerance:e} on {backend:?} with {options:?}");
}

/// Whether the GPU backend can run with `options` here. Without an adapter the GPU tests
/// fail under `CI=true` and are skipped elsewhere; an adapter without what `options` needs
/// (f16) skips them. Either way the reason is printed.
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
