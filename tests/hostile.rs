//! Hostile input (issue 18): whatever files and flags it is handed, the engine answers
//! with one line on stderr and exit code 1, or the right answer; it never aborts, hangs,
//! or destroys a file. `docs/robustness.md` lists every case and the test that checks it.

mod common;

use common::{vitmsn, TempDir};
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

/// Runs the CLI expecting failure; returns its single stderr line.
fn error_line(args: &[&str]) -> String {
    let out = vitmsn(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{args:?}: stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    stderr
}

fn fixture(case: &str, file: &str) -> String {
    common::fixtures_dir()
        .join(case)
        .join(file)
        .display()
        .to_string()
}

/// Writes f32 tensors of the given shapes (filled with 0.01) as a safetensors file.
fn write_f32_tensors(path: &Path, tensors: &[(&str, Vec<usize>)]) {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, shape)| {
            let values = vec![0.01f32; shape.iter().product()];
            bytemuck::cast_slice(&values).to_vec()
        })
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|((name, shape), bytes)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap();
            (name.to_string(), view)
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// A copy of the `base_all_outputs` fixture model whose config.json has `edit` applied.
fn model_with_config(tag: &str, edit: impl Fn(&mut serde_json::Value)) -> TempDir {
    let src = common::fixtures_dir().join("base_all_outputs/model");
    let dir = TempDir::new(tag);
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    dir
}

fn forward_error(model: &Path, input: &str, extra: &[&str]) -> String {
    let model = model.display().to_string();
    let mut args = vec![
        "forward",
        "--model",
        &model,
        "--input",
        input,
        "--output",
        "/dev/null",
    ];
    args.extend(extra);
    error_line(&args)
}

#[test]
fn config_sizes_are_checked_before_anything_is_allocated() {
    let input = fixture("base_all_outputs", "inputs.safetensors");
    for (field, value, expected) in [
        (
            "hidden_size",
            serde_json::json!(2147483648u64),
            "hidden_size 2147483648 is above this engine's limit",
        ),
        (
            "image_size",
            serde_json::json!([9223372036854775816u64, 2]),
            "image_size 9223372036854775816 is above this engine's limit",
        ),
        (
            "num_hidden_layers",
            serde_json::json!(18446744073709551615u64),
            "num_hidden_layers 18446744073709551615 is above",
        ),
        ("image_size", serde_json::json!(1048576), "tokens, above"),
    ] {
        let model = model_with_config(field, |c| c[field] = value.clone());
        let err = forward_error(model.path(), &input, &[]);
        assert!(err.contains(expected), "{field}={value}: {err}");
    }
    let model = model_with_config("array", |c| *c = serde_json::json!([]));
    let err = forward_error(model.path(), &input, &[]);
    assert!(err.contains("config: expected a JSON object"), "{err}");
}

/// The 1.8 MB checkpoint: a config of hidden size 65536 whose embeddings exist
/// but whose encoder weights do not. Stacking query, key and value used to reserve 51 GB
/// before looking for them.
#[test]
fn a_wide_config_over_a_small_checkpoint_fails_on_the_missing_weights() {
    let dir = model_with_config("wide", |c| {
        c["hidden_size"] = 65536.into();
        c["num_attention_heads"] = 1.into();
        c["num_hidden_layers"] = 1.into();
        c["image_size"] = 1.into();
        c["patch_size"] = 1.into();
    });
    let d = 65536;
    write_f32_tensors(
        &dir.path().join("model.safetensors"),
        &[
            ("embeddings.cls_token", vec![1, 1, d]),
            (
                "embeddings.patch_embeddings.projection.weight",
                vec![d, 3, 1, 1],
            ),
            ("embeddings.patch_embeddings.projection.bias", vec![d]),
            ("embeddings.position_embeddings", vec![1, 2, d]),
        ],
    );
    let input = fixture("base_all_outputs", "inputs.safetensors");
    let err = forward_error(dir.path(), &input, &["--backend", "scalar"]);
    assert!(
        err.contains("missing tensor encoder.layer.0.attention.attention.query.weight"),
        "{err}"
    );
}
