//! The image commands as a user tries them: help, typos, folders of mixed junk, checkpoint
//! folders without `preprocessor_config.json`, and outputs that agree with `forward` and
//! the library on the same pixels.

mod common;

use common::{vitmsn, TempDir};
use std::path::{Path, PathBuf};
use vitmsn::internals::safetensors_file::SafetensorsFile;
use vitmsn::preprocess::{Preprocessor, PreprocessorConfig};
use vitmsn::Tensor;

const COMMANDS: [&str; 8] = [
    "demo",
    "forward",
    "bench",
    "preprocess",
    "embed",
    "classify",
    "fewshot",
    "quantize",
];

/// A fixture's model folder: tiny (32x32 images, hidden size 32), with no
/// `preprocessor_config.json`.
fn model(case: &str) -> String {
    common::fixture(case, "model")
}

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

fn sample(relative: &str) -> String {
    samples().join(relative).display().to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `args` expecting success; returns stdout and stderr.
fn succeed(args: &[&str]) -> (String, String) {
    let out = vitmsn(args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{args:?}\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// Runs `args` expecting the one-line error contract; returns that line.
fn fail(args: &[&str]) -> String {
    let stderr = common::one_error_line(&vitmsn(args), &format!("{args:?}"));
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

/// A safetensors file's tensors, sorted by name, and its metadata.
type Contents = (
    Vec<(String, Tensor)>,
    Option<std::collections::HashMap<String, String>>,
);

fn read(path: &Path) -> Contents {
    let file = SafetensorsFile::open(path).unwrap();
    let mut tensors: Vec<(String, Tensor)> = file
        .tensors
        .iter()
        .map(|(name, e)| {
            let data = file.f32_data(e, name).unwrap().to_vec();
            (name.clone(), Tensor::new(e.shape.clone(), data))
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    (tensors, header.metadata().clone())
}

fn tensor<'a>(tensors: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &tensors
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

fn files_metadata(path: &Path) -> Vec<String> {
    let metadata = read(path).1.expect("metadata");
    serde_json::from_str(&metadata["files"]).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn every_command_has_help_with_an_example_and_the_binary_a_version() {
    let (stdout, _) = succeed(&["--version"]);
    assert!(stdout.starts_with("vitmsn "), "{stdout}");
    let (stdout, _) = succeed(&["--help"]);
    for command in COMMANDS {
        assert!(stdout.contains(command), "--help lacks {command}: {stdout}");
        for help in ["--help", "-h"] {
            let (stdout, _) = succeed(&[command, help]);
            assert!(stdout.contains("Example"), "{command} {help}: {stdout}");
            assert!(
                stdout.contains("Usage: vitmsn"),
                "{command} {help}: {stdout}"
            );
        }
    }
    let (stdout, _) = succeed(&["embed", "--help"]);
    for flag in [
        "--model",
        "--output",
        "--features",
        "--backend",
        "--batch",
        "--threads",
        "--strict",
        "--crop",
        "--max-pixels",
    ] {
        assert!(stdout.contains(flag), "embed --help lacks {flag}");
    }
}

#[test]
fn mistakes_get_one_line_saying_what_to_fix() {
    let classifier = model("classifier_ce");
    let cat = sample("query/cat/cat-1.jpg");
    let err = fail(&["embd", &cat]);
    assert!(err.contains("'embed'"), "{err}");
    let err = fail(&["classify", &cat, "--model", &classifier, "--top-kk", "3"]);
    assert!(err.contains("--top-k"), "{err}");
    let err = fail(&["classify", &cat, "--model", &classifier, "--top-k", "0"]);
    assert!(err.contains("--top-k"), "{err}");
    let err = fail(&["embed", &cat, "--model", &classifier]);
    assert!(err.contains("--output"), "{err}");
    let err = fail(&["embed", "--model", &classifier, "--output", "/dev/null"]);
    assert!(err.contains("IMAGE|DIR"), "{err}");
    let err = fail(&[
        "embed",
        &cat,
        "--model",
        &classifier,
        "--output",
        "/dev/null",
        "--features",
        "cls,pooled",
    ]);
    assert!(
        err.contains("pooled") && err.contains("cls_prenorm"),
        "{err}"
    );
    for (flags, wanted) in [
        (
            &["--backend", "cpu", "--precision", "f16"][..],
            "--precision f16",
        ),
        (&["--backend", "scalar", "--threads", "2"][..], "--threads"),
        (&["--backend", "scalar", "--isa", "scalar"][..], "--isa"),
    ] {
        let mut args = vec!["classify", &cat, "--model", &classifier];
        args.extend(flags);
        let err = fail(&args);
        assert!(err.contains(wanted), "{flags:?}: {err}");
    }
    let err = fail(&["classify", "/nonexistent/photo.jpg", "--model", &classifier]);
    assert!(err.contains("/nonexistent/photo.jpg"), "{err}");
    let err = fail(&["classify", &cat, "--model", "/nonexistent"]);
    assert!(err.contains("/nonexistent/config.json"), "{err}");
    let empty = TempDir::new("no-images");
    std::fs::write(empty.path().join("notes.txt"), "not an image").unwrap();
    let err = fail(&[
        "classify",
        &empty.path().display().to_string(),
        "--model",
        &classifier,
    ]);
    assert!(err.contains("no images"), "{err}");

    // A preprocessor_config.json that cannot serve this model is named.
    let broken = TempDir::new("broken-preprocessor");
    std::fs::copy(
        Path::new(&classifier).join("config.json"),
        broken.path().join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        Path::new(&classifier).join("model.safetensors"),
        broken.path().join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        broken.path().join("preprocessor_config.json"),
        "{\"size\": ",
    )
    .unwrap();
    let err = fail(&[
        "classify",
        &cat,
        "--model",
        &broken.path().display().to_string(),
    ]);
    assert!(err.contains("preprocessor_config.json"), "{err}");
}

#[test]
fn preprocess_writes_pixel_values_in_argument_order() {
    let dir = TempDir::new("preprocess");
    let output = dir.path().join("pixels.safetensors");
    let cat = sample("query/cat/cat-1.jpg");
    let support = sample("support");
    // `--model=DIR` spelling, and a checkpoint folder without preprocessor_config.json:
    // the facebook/vit-msn-* preprocessing at the model's own 32x32.
    succeed(&[
        "preprocess",
        &cat,
        &support,
        &format!("--model={}", model("classifier_ce")),
        "--output",
        &output.display().to_string(),
    ]);
    let (tensors, _) = read(&output);
    let pixels = tensor(&tensors, "pixel_values");
    assert_eq!(pixels.shape, vec![9, 3, 32, 32]);

    let mut expected_files = vec![cat.clone()];
    for class in ["astronaut", "cat", "coffee", "rocket"] {
        for n in 1..=2 {
            expected_files.push(sample(&format!("support/{class}/{class}-{n}.jpg")));
        }
    }
    assert_eq!(files_metadata(&output), expected_files);

    let preprocessor = Preprocessor::new(
        PreprocessorConfig {
            size: (32, 32),
            ..PreprocessorConfig::default()
        },
        3,
    )
    .unwrap();
    let plane = 3 * 32 * 32;
    for (i, file) in expected_files.iter().enumerate() {
        let own = preprocessor.load(Path::new(file)).unwrap();
        assert_eq!(own.data, pixels.data[i * plane..(i + 1) * plane], "{file}");
    }

    // --crop: MSN's evaluation transform, a different picture of the same size.
    let cropped = dir.path().join("cropped.safetensors");
    succeed(&[
        "preprocess",
        &cat,
        "--model",
        &model("classifier_ce"),
        "--output",
        &cropped.display().to_string(),
        "--crop",
    ]);
    let (tensors, _) = read(&cropped);
    let crop = tensor(&tensors, "pixel_values");
    assert_eq!(crop.shape, vec![1, 3, 32, 32]);
    assert_ne!(crop.data, pixels.data[..plane]);
}

/// `embed`'s features equal what `forward` computes from `preprocess`'s pixels: the CLS
/// token of `last_hidden_state`, the CLS token of the last layer before the final
/// LayerNorm (`hidden_states[-1]`), and the mean patch token.
#[test]
fn embed_writes_the_features_forward_computes() {
    let dir = TempDir::new("embed");
    let base = model("base_all_outputs");
    let queries = sample("query");
    let path = |name: &str| dir.path().join(name).display().to_string();
    succeed(&[
        "embed",
        &queries,
        "--model",
        &base,
        "--output",
        &path("emb.safetensors"),
        "--features",
        "cls,cls_prenorm,mean",
        "--batch",
        "3",
    ]);
    succeed(&[
        "preprocess",
        &queries,
        "--model",
        &base,
        "--output",
        &path("pixels.safetensors"),
    ]);
    succeed(&[
        "forward",
        "--model",
        &base,
        "--input",
        &path("pixels.safetensors"),
        "--output",
        &path("forward.safetensors"),
        "--output-hidden-states",
        "--quiet",
    ]);
    let (embeddings, _) = read(Path::new(&path("emb.safetensors")));
    let (forward, _) = read(Path::new(&path("forward.safetensors")));
    let last = tensor(&forward, "last_hidden_state");
    let layers = forward
        .iter()
        .filter(|(n, _)| n.starts_with("hidden_states."))
        .count();
    let prenorm = tensor(&forward, &format!("hidden_states.{}", layers - 1));
    let (n, tokens, hidden) = (last.shape[0], last.shape[1], last.shape[2]);
    assert_eq!(n, 4);
    let token = |t: &Tensor, image: usize, token: usize| {
        let start = (image * tokens + token) * hidden;
        t.data[start..start + hidden].to_vec()
    };
    let cls: Vec<f32> = (0..n).flat_map(|i| token(last, i, 0)).collect();
    let cls_prenorm: Vec<f32> = (0..n).flat_map(|i| token(prenorm, i, 0)).collect();
    let mean: Vec<f32> = (0..n)
        .flat_map(|i| {
            let mut sum = vec![0f32; hidden];
            for t in 1..tokens {
                for (s, v) in sum.iter_mut().zip(token(last, i, t)) {
                    *s += v;
                }
            }
            sum.into_iter().map(|s| s / (tokens - 1) as f32)
        })
        .collect();
    for (name, want) in [
        ("cls_embeddings", cls),
        ("cls_prenorm_embeddings", cls_prenorm),
        ("mean_embeddings", mean),
    ] {
        let got = tensor(&embeddings, name);
        assert_eq!(got.shape, vec![n, hidden], "{name}");
        let diff = max_abs_diff(&got.data, &want);
        assert!(diff < 1e-5, "{name}: max |diff| {diff}");
    }
    assert_eq!(
        files_metadata(Path::new(&path("emb.safetensors"))),
        files_metadata(Path::new(&path("pixels.safetensors")))
    );
}

#[test]
fn classify_prints_the_top_labels_forward_gives() {
    let dir = TempDir::new("classify");
    let classifier = model("classifier_ce");
    let queries = sample("query");
    let (stdout, _) = succeed(&["classify", &queries, "--model", &classifier, "--top-k", "2"]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(lines[4].contains("images/s"), "{stdout}");

    let (json, _) = succeed(&[
        "classify",
        &queries,
        "--model",
        &classifier,
        "--top-k",
        "2",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let predictions = json["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 4);
    assert!(json["images_per_s"].as_f64().unwrap() > 0.0);

    let pixels = dir.path().join("pixels.safetensors").display().to_string();
    let logits = dir.path().join("logits.safetensors").display().to_string();
    succeed(&[
        "preprocess",
        &queries,
        "--model",
        &classifier,
        "--output",
        &pixels,
    ]);
    succeed(&[
        "forward",
        "--model",
        &classifier,
        "--input",
        &pixels,
        "--output",
        &logits,
        "--quiet",
    ]);
    let (forward, _) = read(Path::new(&logits));
    let logits = tensor(&forward, "logits");
    let labels = ["cat", "dog", "bird", "fish", "frog"];
    for (i, (line, prediction)) in lines.iter().zip(predictions).enumerate() {
        let row = &logits.data[i * 5..(i + 1) * 5];
        let best = (0..5).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        let top = &prediction["labels"][0];
        assert_eq!(top["label"], labels[best], "{prediction}");
        let softmax_best = 1.0 / row.iter().map(|v| (v - row[best]).exp()).sum::<f32>();
        let probability = top["probability"].as_f64().unwrap() as f32;
        assert!((probability - softmax_best).abs() < 1e-5, "{prediction}");
        assert_eq!(prediction["labels"].as_array().unwrap().len(), 2);
        assert!(
            line.contains(prediction["file"].as_str().unwrap())
                && line.contains(&format!("{} {:.4}", labels[best], softmax_best)),
            "{line}"
        );
    }
}

/// A folder of good photos among junk: the junk is skipped with one line each naming it
/// and why, other files are ignored, and `--strict` turns any skip into an error that
/// writes nothing.
#[test]
fn a_folder_of_mixed_junk_skips_what_it_cannot_read() {
    let dir = TempDir::new("junk");
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(photos.join("Sub")).unwrap();
    let cat = std::fs::read(sample("query/cat/cat-1.jpg")).unwrap();
    std::fs::write(photos.join("b-cat.jpg"), &cat).unwrap();
    std::fs::write(photos.join("Sub/c-cat.JPEG"), &cat).unwrap();
    std::fs::write(photos.join("a-empty.png"), b"").unwrap();
    std::fs::write(photos.join("d-truncated.jpg"), &cat[..cat.len() / 3]).unwrap();
    std::fs::write(photos.join("e-text.jpg"), "just words").unwrap();
    std::fs::write(photos.join("notes.txt"), "ignored: not an image extension").unwrap();
    std::fs::write(photos.join("f-bomb.png"), png_header(100_000, 100_000)).unwrap();

    let output = dir.path().join("emb.safetensors");
    let photos_arg = photos.display().to_string();
    let output_arg = output.display().to_string();
    let args = [
        "embed",
        &photos_arg,
        "--model",
        &model("classifier_ce"),
        "--output",
        &output_arg,
    ];
    let (_, stderr) = succeed(&args);
    let skipped: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("skipped"))
        .collect();
    assert_eq!(skipped.len(), 4, "{stderr}");
    for (name, why) in [
        ("a-empty.png", "empty"),
        ("d-truncated.jpg", "truncated"),
        ("e-text.jpg", "not an image"),
        (
            "f-bomb.png",
            "100000x100000 is over the 100000000-pixel limit",
        ),
    ] {
        assert!(
            skipped.iter().any(|l| l.contains(name) && l.contains(why)),
            "{name}: {stderr}"
        );
    }
    assert!(!stderr.contains("notes.txt"), "{stderr}");
    let (tensors, _) = read(&output);
    assert_eq!(tensor(&tensors, "cls_embeddings").shape, vec![2, 32]);
    let files = files_metadata(&output);
    assert!(files[0].ends_with("Sub/c-cat.JPEG") && files[1].ends_with("b-cat.jpg"));

    std::fs::remove_file(&output).unwrap();
    let mut strict = args.to_vec();
    strict.push("--strict");
    let err = fail(&strict);
    assert!(err.contains("a-empty.png"), "{err}");
    assert!(!output.exists(), "--strict wrote {}", output.display());
}

/// The first bytes of a decompression bomb: a valid PNG header declaring `width` x `height`
/// 8-bit RGB pixels, and the start of its data.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    // A zlib stream of zeros, as a bomb's data would start.
    png.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9C, 0x63, 0x60, 0x18, 0x05, 0x00],
    ));
    png
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend(kind);
    chunk.extend(data);
    // CRC-32 (ISO-HDLC, as PNG uses) of the chunk type and data.
    let mut crc = !0u32;
    for &byte in &chunk[4..] {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    chunk.extend((!crc).to_be_bytes());
    chunk
}

/// Copies `files` (relative to samples/) into `dir/<class>/`, one class per entry.
fn class_folders(dir: &Path, files: &[(&str, &str)]) {
    for (class, file) in files {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        let name = Path::new(file).file_name().unwrap();
        std::fs::copy(sample(file), dir.join(class).join(name)).unwrap();
    }
}

/// A labelled set whose answer is known: each query is one of the support images, one
/// support image per class, so its own class's prototype is itself (cosine 1) and every
/// query is classified right by either method, whatever the weights.
#[test]
fn fewshot_classifies_a_set_whose_answer_is_known() {
    let dir = TempDir::new("fewshot");
    let pick = [
        ("astronaut", "support/astronaut/astronaut-1.jpg"),
        ("cat", "support/cat/cat-1.jpg"),
        ("coffee", "support/coffee/coffee-1.jpg"),
        ("rocket", "support/rocket/rocket-1.jpg"),
    ];
    class_folders(&dir.path().join("support"), &pick);
    class_folders(&dir.path().join("query"), &pick);
    let support = dir.path().join("support").display().to_string();
    let query = dir.path().join("query").display().to_string();
    let base = model("base_all_outputs");
    let fewshot = |query: &str, extra: &[&str]| {
        let mut args = vec![
            "fewshot",
            "--model",
            &base,
            "--support",
            &support,
            "--query",
            query,
        ];
        args.extend(extra);
        succeed(&args).0
    };
    for (method, features) in [
        ("prototype", "cls"),
        ("prototype", "cls_prenorm"),
        ("logistic", "cls"),
    ] {
        let stdout = fewshot(
            &query,
            &["--method", method, "--features", features, "--json"],
        );
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            json["classes"],
            serde_json::json!(["astronaut", "cat", "coffee", "rocket"])
        );
        assert_eq!(json["accuracy"], 1.0, "{method} {features}: {stdout}");
        for (prediction, (class, _)) in json["predictions"].as_array().unwrap().iter().zip(pick) {
            assert_eq!(prediction["label"], class, "{stdout}");
            assert!(prediction["file"].as_str().unwrap().contains(class));
            let score = prediction["score"].as_f64().unwrap();
            if method == "prototype" {
                assert!((score - 1.0).abs() < 1e-5, "{stdout}");
            } else {
                assert!(score > 0.25 && score <= 1.0, "{stdout}");
            }
        }
    }

    // Text output: a line per query and the accuracy; a query given as files has none.
    let stdout = fewshot(&query, &[]);
    assert!(
        stdout.contains("accuracy") && stdout.contains("4/4"),
        "{stdout}"
    );
    let stdout = fewshot(&sample("query/cat/cat-1.jpg"), &["--json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["accuracy"], serde_json::Value::Null);
    assert_eq!(json["predictions"].as_array().unwrap().len(), 1);

    let err = fail(&[
        "fewshot",
        "--model",
        &base,
        "--support",
        &sample("query/cat"),
        "--query",
        &query,
    ]);
    assert!(err.contains("class subfolders"), "{err}");
    let err = fail(&[
        "fewshot",
        "--model",
        &base,
        "--support",
        &support,
        "--query",
        &query,
        "--features",
        "mean",
    ]);
    assert!(err.contains("cls or cls_prenorm"), "{err}");
}

/// The demo on the cpu backend's kernels only (the scalar reference on vit-msn-small is
/// slow in a test build): random weights said plainly, a row per instruction set; then on
/// a small checkpoint, where every backend agrees with the scalar reference.
#[test]
fn demo_runs_with_no_arguments_beyond_the_backend() {
    let (stdout, _) = succeed(&["demo", "--backends", "cpu"]);
    assert!(stdout.contains("random weights"), "{stdout}");
    assert!(stdout.contains("ms/image"), "{stdout}");
    let rows = vitmsn::Isa::supported()
        .into_iter()
        .filter(|&isa| isa != vitmsn::Isa::Scalar)
        .count();
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("cpu (")).count(),
        rows,
        "{stdout}"
    );

    // With a checkpoint: its own weights, every backend asked for compared with scalar.
    let (stdout, _) = succeed(&[
        "demo",
        "--model",
        &model("base_all_outputs"),
        "--backends",
        "scalar,cpu",
    ]);
    assert!(!stdout.contains("random weights"), "{stdout}");
    let table: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("scalar ") || l.starts_with("cpu ("))
        .collect();
    assert_eq!(table.len(), 1 + rows, "{stdout}");
    for row in table {
        // backend (14 columns), ms/image, max diff vs scalar, accuracy, predictions
        let fields: Vec<&str> = row[14..].split_whitespace().collect();
        let difference: f32 = fields[1].parse().unwrap();
        assert!(difference <= 1e-5, "{row}");
    }
}

/// A GPU run prints what it wrote and nothing else: no Vulkan loader noise on stderr, even
/// without `XDG_RUNTIME_DIR`, whose absence makes Mesa complain twice per run.
#[cfg(feature = "gpu")]
#[test]
fn gpu_runs_are_quiet_and_forward_summarises_its_outputs() {
    if !common::gpu_ready(&vitmsn::BackendOptions::default()) {
        return;
    }
    let dir = TempDir::new("gpu-quiet");
    let output = dir.path().join("out.safetensors").display().to_string();
    let case = common::fixtures_dir().join("classifier_ce");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vitmsn"))
        .args(["forward", "--model", &model("classifier_ce"), "--input"])
        .arg(case.join("inputs.safetensors"))
        .args(["--output", &output, "--backend", "gpu"])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "", "a GPU run wrote to stderr");
    // The tensors written with their shapes, and each image's top label.
    for line in ["logits [2, 5]", "loss []", "image 0: ", "image 1: "] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
}
