//! The `vitmsn` command line: `forward`'s outputs on real `save_pretrained` directories,
//! one-line errors for bad models and inputs, and `bench --json`, which other tools read.

mod common;

use common::{fixture, vitmsn, TempDir};
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;
use vitmsn::internals::safetensors_file::SafetensorsFile;
use vitmsn::Isa;

/// Rewrites a safetensors file, letting `edit` drop (None) or replace each tensor.
fn rewrite(
    src: &Path,
    dst: &Path,
    edit: impl Fn(&str, Dtype, Vec<usize>, Vec<u8>) -> Option<(Dtype, Vec<usize>, Vec<u8>)>,
) {
    let file = SafetensorsFile::open(src).unwrap();
    let mut kept: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, e) in &file.tensors {
        if let Some((dtype, shape, bytes)) =
            edit(name, e.dtype, e.shape.clone(), file.bytes(e).unwrap())
        {
            kept.push((name.clone(), dtype, shape, bytes));
        }
    }
    let views: Vec<(String, TensorView)> = kept
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(dst, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// A copy of a fixture's model directory, with its weights edited.
fn edited_model(
    case: &str,
    tag: &str,
    edit: impl Fn(&str, Dtype, Vec<usize>, Vec<u8>) -> Option<(Dtype, Vec<usize>, Vec<u8>)>,
) -> TempDir {
    let src = common::fixtures_dir().join(case).join("model");
    let dir = TempDir::new(tag);
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    rewrite(
        &src.join("model.safetensors"),
        &dir.path().join("model.safetensors"),
        edit,
    );
    dir
}

/// Runs `forward` on `model` and `input` (plus `extra` flags) expecting failure, and
/// returns its single stderr line.
fn forward_error(model: &str, input: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "forward",
        "--model",
        model,
        "--input",
        input,
        "--output",
        "/dev/null",
    ];
    args.extend(extra);
    common::one_error_line(&vitmsn(&args), "forward")
}

#[test]
fn forward_writes_every_requested_output_like_transformers() {
    for (case, extra) in [
        (
            "base_all_outputs",
            vec!["--output-hidden-states", "--output-attentions"],
        ),
        (
            "classifier_ce",
            vec!["--output-hidden-states", "--output-attentions"],
        ),
        (
            "interpolate_nonsquare",
            vec!["--output-hidden-states", "--interpolate-pos-encoding"],
        ),
        ("sharded", vec!["--output-hidden-states"]),
    ] {
        let dir = TempDir::new(case);
        let out_path = dir.path().join("out.safetensors");
        let out_str = out_path.display().to_string();
        let (model, input) = (fixture(case, "model"), fixture(case, "inputs.safetensors"));
        let mut args = vec![
            "forward",
            "--model",
            &model,
            "--input",
            &input,
            "--output",
            &out_str,
            "--backend",
            "scalar",
        ];
        args.extend(extra);
        let out = vitmsn(&args);
        assert!(
            out.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let written = SafetensorsFile::open(&out_path).unwrap();
        let expected = common::expected(&common::fixtures_dir().join(case));
        assert_eq!(
            written.tensors.len(),
            expected.len(),
            "{case}: output names"
        );
        for (name, reference) in expected {
            let e = &written.tensors[&name];
            assert_eq!(e.dtype, Dtype::F32);
            let ours = vitmsn::Tensor::new(
                e.shape.clone(),
                written.f32_data(e, &name).unwrap().to_vec(),
            );
            let err = common::relative_error(&ours, &reference);
            assert!(err <= 1e-5, "{case}/{name}: {err:e}");
        }
    }
}

#[test]
fn missing_or_misshapen_weights_are_named() {
    let model = edited_model("base_all_outputs", "missing", |name, d, s, b| {
        (name != "layernorm.bias").then_some((d, s, b))
    });
    let input = fixture("base_all_outputs", "inputs.safetensors");
    let err = forward_error(model.path().to_str().unwrap(), &input, &[]);
    assert!(err.contains("missing tensor layernorm.bias"), "{err}");

    let model = edited_model("base_all_outputs", "shape", |name, d, s, b| {
        Some(if name == "encoder.layer.1.intermediate.dense.weight" {
            (d, vec![s[1], s[0]], b)
        } else {
            (d, s, b)
        })
    });
    let err = forward_error(model.path().to_str().unwrap(), &input, &[]);
    assert!(
        err.contains(
            "encoder.layer.1.intermediate.dense.weight has shape [32, 64], expected [64, 32]"
        ),
        "{err}"
    );
}

/// A fixture's input file with its pixels replaced (or dropped) and `extra` tensors
/// added or replacing those of the same name: the directory that holds it, and its path.
fn input_with(
    case: &str,
    tag: &str,
    pixels: Option<(Vec<usize>, Vec<f32>)>,
    extra: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>,
) -> (TempDir, String) {
    let dir = TempDir::new(tag);
    let path = dir.path().join("in.safetensors");
    let src = common::fixtures_dir().join(case).join("inputs.safetensors");
    let replaced: Vec<&str> = extra.iter().map(|(n, ..)| *n).collect();
    rewrite(&src, &path, |name, d, s, b| {
        if replaced.contains(&name) {
            return None;
        }
        if name != "pixel_values" {
            return Some((d, s, b));
        }
        let to_bytes = |data: &Vec<f32>| bytemuck::cast_slice(data).to_vec();
        pixels
            .as_ref()
            .map(|(shape, data)| (Dtype::F32, shape.clone(), to_bytes(data)))
    });
    let file = SafetensorsFile::open(&path).unwrap();
    let mut all: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = file
        .tensors
        .iter()
        .map(|(n, e)| (n.clone(), e.dtype, e.shape.clone(), file.bytes(e).unwrap()))
        .collect();
    drop(file);
    all.extend(
        extra
            .into_iter()
            .map(|(n, d, s, b)| (n.to_string(), d, s, b)),
    );
    let views: Vec<(String, TensorView)> = all
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    let path = path.display().to_string();
    (dir, path)
}

fn pixels(shape: [usize; 4]) -> Option<(Vec<usize>, Vec<f32>)> {
    Some((shape.to_vec(), vec![0.5; shape.iter().product()]))
}

#[test]
fn bad_inputs_give_one_line_naming_the_problem() {
    let model = fixture("mask_token", "model");

    let (_wrong_mask_dir, wrong_mask) = input_with(
        "mask_token",
        "mask",
        pixels([2, 3, 32, 32]),
        vec![("bool_masked_pos", Dtype::BOOL, vec![2, 15], vec![1; 30])],
    );
    let err = forward_error(&model, &wrong_mask, &[]);
    assert!(err.contains("bool_masked_pos"), "{err}");

    let base_model = fixture("base_all_outputs", "model");
    let (_head_mask_dir, head_mask) = input_with(
        "base_all_outputs",
        "head",
        pixels([2, 3, 32, 32]),
        vec![(
            "head_mask",
            Dtype::F32,
            vec![3],
            bytemuck::cast_slice(&[1.0f32; 3]).to_vec(),
        )],
    );
    let err = forward_error(&base_model, &head_mask, &[]);
    assert!(
        err.contains("head_mask has shape [3], expected [4] or [2, 4]"),
        "{err}"
    );

    let (_big_dir, big) = input_with("base_all_outputs", "size", pixels([1, 3, 48, 40]), vec![]);
    let err = forward_error(&base_model, &big, &[]);
    assert!(
        err.contains("48x40") && err.contains("--interpolate-pos-encoding"),
        "{err}"
    );

    let (_channels_dir, channels) = input_with(
        "base_all_outputs",
        "channels",
        pixels([1, 1, 32, 32]),
        vec![],
    );
    let err = forward_error(&base_model, &channels, &[]);
    assert!(err.contains("1 channels"), "{err}");

    let (_no_pixels_dir, no_pixels) = input_with("base_all_outputs", "nopix", None, vec![]);
    let err = forward_error(&base_model, &no_pixels, &[]);
    assert!(err.contains("pixel_values"), "{err}");

    let ok_input = fixture("base_all_outputs", "inputs.safetensors");
    let err = forward_error(&base_model, &ok_input, &["--backend", "tpu"]);
    assert!(err.contains("unknown backend \"tpu\""), "{err}");
    let err = forward_error(&base_model, &ok_input, &["--isa", "sse"]);
    assert!(err.contains("unknown instruction set \"sse\""), "{err}");
    let err = forward_error(&base_model, &ok_input, &["--profile"]);
    assert!(err.contains("unexpected argument '--profile'"), "{err}");
    let err = forward_error(
        &base_model,
        &ok_input,
        &["--backend", "scalar", "--isa", "scalar"],
    );
    assert!(
        err.contains("--isa applies to the cpu backend, not the scalar backend"),
        "{err}"
    );
    if let Some(foreign) = Isa::ALL.into_iter().find(|isa| !isa.is_supported()) {
        let err = forward_error(&base_model, &ok_input, &["--isa", foreign.name()]);
        assert!(
            err.contains(&format!("cannot run the {} kernels", foreign.name())),
            "{err}"
        );
    }

    let (_mask_without_token_dir, mask_without_token) = input_with(
        "base_all_outputs",
        "notoken",
        pixels([2, 3, 32, 32]),
        vec![("bool_masked_pos", Dtype::BOOL, vec![2, 16], vec![1; 32])],
    );
    let err = forward_error(&base_model, &mask_without_token, &[]);
    assert!(err.contains("mask_token"), "{err}");

    let err = forward_error("/nonexistent", &ok_input, &[]);
    assert!(err.contains("/nonexistent/config.json"), "{err}");
}

/// The value of `"key":` in a one-line JSON object, as written (strings keep their quotes).
fn json_field<'a>(json: &'a str, key: &str) -> &'a str {
    let start = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + key.len()
        + 3;
    let len = json[start..].find([',', '}']).unwrap();
    &json[start..start + len]
}

#[test]
fn bench_profile_lists_each_kind_of_op_of_a_forward() {
    let model = fixture("base_all_outputs", "model");
    let bench = |extra: &[&str]| {
        let args = [
            &["bench", "--model", &model, "--iters", "2", "--threads", "2"],
            extra,
        ]
        .concat();
        let out = vitmsn(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let json = bench(&["--profile", "--json"]);
    // Two layers: two norms each and the final one, four linear layers each.
    let mut rest = json.as_str();
    for (op, count, has_rate) in [
        ("PatchEmbed", 1, true),
        ("ClsPosition", 1, false),
        ("LayerNorm", 5, false),
        ("Linear", 8, true),
        ("Attention", 2, true),
    ] {
        let start = rest
            .find(&format!("{{\"op\":\"{op}\",\"count\":{count},"))
            .unwrap_or_else(|| panic!("no {op} ×{count} in order in {json}"));
        let entry = &rest[start..rest[start..].find('}').unwrap() + start + 1];
        assert!(
            json_field(entry, "ms").parse::<f64>().unwrap() >= 0.0,
            "{entry}"
        );
        assert_eq!(
            json_field(entry, "gflop_per_s") != "null",
            has_rate,
            "{entry}"
        );
        rest = &rest[start + entry.len()..];
    }
    assert!(!bench(&["--json"]).contains("\"ops\""));
    let text = bench(&["--profile"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("Linear") && l.contains('%')),
        "{text}"
    );
}

#[test]
fn bench_json_reports_the_run_for_every_instruction_set() {
    let model = fixture("base_all_outputs", "model");
    for isa in Isa::supported() {
        let out = vitmsn(&[
            "bench",
            "--model",
            &model,
            "--batch",
            "2",
            "--threads",
            "1",
            "--iters",
            "3",
            "--isa",
            isa.name(),
            "--json",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json = stdout.trim();
        assert!(json.starts_with('{') && json.ends_with('}') && !json.contains('\n'));
        assert_eq!(json_field(json, "backend"), "\"cpu\"");
        assert_eq!(json_field(json, "isa"), format!("\"{}\"", isa.name()));
        assert_eq!(json_field(json, "threads"), "1");
        assert_eq!(json_field(json, "batch"), "2");
        assert_eq!(json_field(json, "iters"), "3");
        let number = |key| json_field(json, key).parse::<f64>().unwrap();
        let (median, images) = (number("median_ms"), number("images_per_s"));
        assert!(median > 0.0 && number("min_ms") <= median, "{json}");
        // Both derive from one median; the JSON rounds it to 3 decimals of a millisecond.
        assert!((images * median / 1e3 / 2.0 - 1.0).abs() < 0.05, "{json}");
    }
}
