//! `vitmsn quantize`: the file holds exactly the weight matrices as int8 with their scales
//! and every other tensor as it was; loaded as is it runs in int8 and gives, bit for bit,
//! what the original checkpoint gives with `--precision int8` (the same quantization, not
//! a second one); loaded in f32 it runs on the dequantized weights; and what it must not
//! write over or quantize twice is refused.

mod common;

use common::{one_error_line, vitmsn, TempDir};
use safetensors::tensor::Dtype;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vitmsn::internals::quantize::quantize_checkpoint;
use vitmsn::internals::safetensors_file::{SafetensorsFile, TensorEntry};
use vitmsn::{BackendKind, ErrorKind, Precision, ViTMSN};

/// One file, a classifier, a sharded checkpoint and bf16 weights.
const CASES: [&str; 4] = [
    "base_all_outputs",
    "classifier_ce",
    "sharded",
    "weights_bf16",
];

fn case_dir(case: &str) -> PathBuf {
    common::fixtures_dir().join(case)
}

/// Quantizes a fixture's model with the CLI into `out/case`, checking its report.
fn quantize(case: &str, out: &TempDir) -> PathBuf {
    let model = case_dir(case).join("model");
    let output = out.path().join(case);
    let ran = vitmsn(&[
        "quantize",
        "--model",
        model.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{case}: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let written = output.join("model.safetensors");
    assert!(
        stdout.starts_with(&format!("wrote {}: ", written.display()))
            && stdout.contains("int8 weight matrices")
            && stdout.contains(" → "),
        "{case}: {stdout}"
    );
    output
}

/// Every tensor of a model folder (all its shards) with its file.
fn tensors(dir: &Path) -> BTreeMap<String, (TensorEntry, PathBuf)> {
    let mut tensors = BTreeMap::new();
    for file in std::fs::read_dir(dir).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let opened = SafetensorsFile::open(&path).unwrap();
            for (name, entry) in opened.tensors {
                tensors.insert(name, (entry, path.clone()));
            }
        }
    }
    tensors
}

fn bytes(tensor: &(TensorEntry, PathBuf)) -> Vec<u8> {
    SafetensorsFile::open(&tensor.1)
        .unwrap()
        .bytes(&tensor.0)
        .unwrap()
}

fn f32_values(tensor: &(TensorEntry, PathBuf), name: &str) -> Vec<f32> {
    SafetensorsFile::open(&tensor.1)
        .unwrap()
        .f32_data(&tensor.0, name)
        .unwrap()
}

fn is_matrix(name: &str, entry: &TensorEntry) -> bool {
    name.ends_with(".weight") && entry.shape.len() >= 2
}

#[test]
fn the_weight_matrices_become_int8_with_scales_and_the_rest_is_copied() {
    let out = TempDir::new("quantize-contents");
    for case in CASES {
        let original = tensors(&case_dir(case).join("model"));
        let quantized = tensors(&quantize(case, &out));
        let matrices = original
            .iter()
            .filter(|(name, (entry, _))| is_matrix(name, entry))
            .count();
        // Linear weights (query, key, value, output, intermediate and output dense per
        // layer, the classifier's) and the patch embedding.
        let layers = 2;
        let head = usize::from(original.contains_key("classifier.weight"));
        assert_eq!(matrices, 1 + 6 * layers + head, "{case}");
        assert_eq!(quantized.len(), original.len() + matrices, "{case}");
        for (name, tensor) in &original {
            let (entry, _) = tensor;
            let stored = &quantized[name];
            assert_eq!(stored.0.shape, entry.shape, "{case}: {name}");
            if !is_matrix(name, entry) {
                assert_eq!(stored.0.dtype, entry.dtype, "{case}: {name}");
                assert!(bytes(stored) == bytes(tensor), "{case}: {name} changed");
                continue;
            }
            assert_eq!(stored.0.dtype, Dtype::I8, "{case}: {name}");
            let scales_name = format!("{name}_scale");
            let scales = &quantized[&scales_name];
            assert_eq!(scales.0.dtype, Dtype::F32, "{case}: {scales_name}");
            let rows = entry.shape[0];
            assert_eq!(scales.0.shape, [rows], "{case}: {scales_name}");
            // Symmetric per row: the row's largest magnitude is ±127, and every value is
            // within half a step of the original.
            let (values, scales) = (bytes(stored), f32_values(scales, &scales_name));
            let weights = f32_values(tensor, name);
            let row_len = weights.len() / rows;
            for (row, &scale) in scales.iter().enumerate() {
                let span = row * row_len..(row + 1) * row_len;
                let largest = weights[span.clone()]
                    .iter()
                    .fold(0f32, |m, w| m.max(w.abs()));
                assert_eq!(scale, largest / 127.0, "{case}: {name} row {row}");
                for i in span {
                    let q = values[i] as i8;
                    let error = (f32::from(q) * scale - weights[i]).abs();
                    assert!(error <= scale * 0.5001, "{case}: {name}[{i}]");
                }
            }
        }
    }
}

#[test]
fn a_quantized_checkpoint_runs_in_int8_as_the_original_does_with_precision_int8() {
    let out = TempDir::new("quantize-outputs");
    for case in CASES {
        let case_path = case_dir(case);
        let quantized_dir = quantize(case, &out);
        let load = |dir: &Path, precision: Option<Precision>| {
            let builder = ViTMSN::builder().backend(BackendKind::Cpu).threads(2);
            let builder = match precision {
                Some(precision) => builder.precision(precision),
                None => builder,
            };
            builder.load(dir).unwrap()
        };
        let run = |model: &ViTMSN| common::named_outputs(&common::forward_case(&case_path, model));

        let quantized = load(&quantized_dir, None);
        assert_eq!(quantized.precision(), Precision::Int8, "{case}");
        let original_int8 = load(&case_path.join("model"), Some(Precision::Int8));
        assert!(
            run(&quantized) == run(&original_int8),
            "{case}: the quantized checkpoint differs from the original in int8"
        );

        // In f32 the weights are dequantized: only their rounding separates it from the
        // original (measured: at most 1.7e-2 of the largest output).
        let dequantized = load(&quantized_dir, Some(Precision::F32));
        assert_eq!(dequantized.precision(), Precision::F32, "{case}");
        let original = load(&case_path.join("model"), None);
        common::check_outputs(&run(&dequantized), &run(&original), 3e-2, case);
    }
}

#[test]
fn the_command_line_runs_a_quantized_checkpoint_in_int8_without_being_told() {
    let out = TempDir::new("quantize-cli");
    let case = "base_all_outputs";
    let quantized = quantize(case, &out);
    let input = common::fixture(case, "inputs.safetensors");
    let forward = |model: &Path, output: &Path, precision: &[&str]| {
        let mut args = vec![
            "forward",
            "--backend",
            "cpu",
            "--model",
            model.to_str().unwrap(),
            "--input",
            &input,
            "--output",
            output.to_str().unwrap(),
            "--quiet",
        ];
        args.extend(precision);
        let ran = vitmsn(&args);
        assert!(
            ran.status.success(),
            "{}",
            String::from_utf8_lossy(&ran.stderr)
        );
        std::fs::read(output).unwrap()
    };
    let from_quantized = forward(&quantized, &out.path().join("q.safetensors"), &[]);
    let original = case_dir(case).join("model");
    let from_original = forward(
        &original,
        &out.path().join("o.safetensors"),
        &["--precision", "int8"],
    );
    assert!(from_quantized == from_original);

    let bench = vitmsn(&[
        "bench",
        "--model",
        quantized.to_str().unwrap(),
        "--iters",
        "1",
        "--json",
    ]);
    let report = String::from_utf8_lossy(&bench.stdout);
    assert!(report.contains("\"precision\":\"int8\""), "{report}");
}

/// The fixtures' models are tiny (hidden size 32): their int8 matrices are a quarter of
/// the f32 ones, but the tensors kept in f32 (position table, biases, norms), the scales
/// and the header weigh far more beside them than in a real model, where the file is
/// close to a quarter of the f32 one (vit-msn-small: 0.26).
#[test]
fn a_quantized_checkpoint_is_its_matrices_at_one_byte_per_weight() {
    let out = TempDir::new("quantize-size");
    let case = "base_all_outputs";
    let model = case_dir(case).join("model");
    let summary = quantize_checkpoint(&model, &out.path().join(case)).unwrap();
    let original = tensors(&model);
    let (mut matrix_values, mut rows, mut other_bytes) = (0, 0, 0);
    for (name, (entry, _)) in &original {
        if is_matrix(name, entry) {
            matrix_values += entry.shape.iter().product::<usize>();
            rows += entry.shape[0];
        } else {
            other_bytes += entry.byte_len;
        }
    }
    let written = SafetensorsFile::open(&summary.file).unwrap();
    let data_bytes: usize = written.tensors.values().map(|e| e.byte_len).sum();
    assert_eq!(data_bytes, matrix_values + 4 * rows + other_bytes);
    assert_eq!(summary.int8_matrices, 13);
    assert_eq!(
        summary.bytes_before,
        std::fs::metadata(model.join("model.safetensors"))
            .unwrap()
            .len()
    );
    assert_eq!(
        summary.bytes_after,
        std::fs::metadata(&summary.file).unwrap().len()
    );
    // Measured: 35176 of 99512 bytes (0.35).
    let ratio = summary.bytes_after as f64 / summary.bytes_before as f64;
    assert!(ratio < 0.36, "{ratio}");
}

#[test]
fn the_model_folder_and_a_quantized_checkpoint_are_refused() {
    let out = TempDir::new("quantize-refusals");
    let model = case_dir("base_all_outputs").join("model");
    let model_text = model.to_str().unwrap();
    let before = std::fs::read(model.join("model.safetensors")).unwrap();

    let into_model = vitmsn(&["quantize", "--model", model_text, "--output", model_text]);
    let line = one_error_line(&into_model, "quantize into the model folder");
    assert!(line.contains("refusing to write"), "{line}");
    let library = quantize_checkpoint(&model, &model).unwrap_err();
    assert_eq!(library.kind(), ErrorKind::InvalidOption, "{library}");
    #[cfg(unix)]
    {
        let link = out.path().join("link-to-model");
        std::os::unix::fs::symlink(&model, &link).unwrap();
        let through_link = vitmsn(&[
            "quantize",
            "--model",
            model_text,
            "--output",
            link.to_str().unwrap(),
        ]);
        one_error_line(&through_link, "quantize into a link to the model folder");
        let library = quantize_checkpoint(&model, &link).unwrap_err();
        assert_eq!(library.kind(), ErrorKind::InvalidOption, "{library}");
    }
    assert!(std::fs::read(model.join("model.safetensors")).unwrap() == before);

    let quantized = quantize("base_all_outputs", &out);
    let again = vitmsn(&[
        "quantize",
        "--model",
        quantized.to_str().unwrap(),
        "--output",
        out.path().join("twice").to_str().unwrap(),
    ]);
    let line = one_error_line(&again, "quantize a quantized checkpoint");
    assert!(line.contains("already quantized"), "{line}");
    assert!(!out.path().join("twice").exists());
}
