//! Hostile input (issue 18): whatever files and flags it is handed, the engine answers
//! with one line on stderr and exit code 1, or the right answer; it never aborts, hangs,
//! or destroys a file. `docs/robustness.md` lists every case and the test that checks it.

mod common;

use common::{fixture, TempDir};
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;
use std::time::{Duration, Instant};
use vitmsn::internals::weights::Weights;
use vitmsn::{BackendKind, BackendOptions, ForwardInput, Tensor, ViTMSN, ViTMSNConfig};

/// Runs the CLI, killing it after a minute: a hang is a failure, not a stuck test run.
fn run_bounded(args: &[&str]) -> std::process::Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vitmsn"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{args:?} still ran after a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs the CLI expecting failure; returns its single stderr line.
fn error_line(args: &[&str]) -> String {
    common::one_error_line(&run_bounded(args), &format!("{args:?}"))
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

/// The issue's 1.8 MB checkpoint: a config of hidden size 65536 whose embeddings exist
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
    // Within a budget, the missing weights are found before the stack is allocated.
    let err = forward_error(
        dir.path(),
        &input,
        &["--backend", "scalar", "--max-memory", "1T"],
    );
    assert!(
        err.contains("missing tensor encoder.layer.0.attention.attention.query.weight"),
        "{err}"
    );
    // Within a smaller one, the config's weights are refused before any is read.
    let err = forward_error(
        dir.path(),
        &input,
        &["--backend", "scalar", "--max-memory", "1G"],
    );
    assert!(
        err.contains("the model's weights take 64.0 GiB as f32, over the memory budget of 1.0 GiB"),
        "{err}"
    );
}

/// Makes a FIFO at `path` (nothing ever writes to it: opening it for reading would block).
#[cfg(unix)]
fn make_fifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success());
}

/// A copy of the `base_all_outputs` fixture model (config and weights).
fn model_copy(tag: &str) -> TempDir {
    model_with_config(tag, |_| {})
}

#[cfg(unix)]
#[test]
fn special_files_are_refused_without_blocking() {
    let input = fixture("base_all_outputs", "inputs.safetensors");

    let model = model_copy("fifo-weights");
    let weights = model.path().join("model.safetensors");
    std::fs::remove_file(&weights).unwrap();
    make_fifo(&weights);
    let err = forward_error(model.path(), &input, &[]);
    assert!(
        err.contains("model.safetensors: is a FIFO, not a regular file"),
        "{err}"
    );

    let model = model_copy("zero-config");
    let config = model.path().join("config.json");
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &config).unwrap();
    let err = forward_error(model.path(), &input, &[]);
    assert!(
        err.contains("config.json: is a device, not a regular file"),
        "{err}"
    );

    let model = model_copy("dir-config");
    let config = model.path().join("config.json");
    std::fs::remove_file(&config).unwrap();
    std::fs::create_dir(&config).unwrap();
    let err = forward_error(model.path(), &input, &[]);
    assert!(
        err.contains("config.json: is a directory, not a regular file"),
        "{err}"
    );

    let model = model_copy("fifo-input");
    let fifo_input = model.path().join("in.safetensors");
    make_fifo(&fifo_input);
    let err = forward_error(model.path(), fifo_input.to_str().unwrap(), &[]);
    assert!(
        err.contains("in.safetensors: is a FIFO, not a regular file"),
        "{err}"
    );

    let sharded = TempDir::new("fifo-index");
    std::fs::copy(
        common::fixtures_dir().join("sharded/model/config.json"),
        sharded.path().join("config.json"),
    )
    .unwrap();
    make_fifo(&sharded.path().join("model.safetensors.index.json"));
    let err = forward_error(sharded.path(), &input, &[]);
    assert!(
        err.contains("index.json: is a FIFO, not a regular file"),
        "{err}"
    );

    let model = model_copy("fifo-preprocessor");
    make_fifo(&model.path().join("preprocessor_config.json"));
    let out = model.path().join("pixels.safetensors");
    let image = common::fixtures_dir().join("images/coffee_rgb_24x16.png");
    let err = error_line(&[
        "preprocess",
        image.to_str().unwrap(),
        "--model",
        model.path().to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("preprocessor_config.json: is a FIFO, not a regular file"),
        "{err}"
    );

    let plain_model = model_copy("fifo-image");
    let fifo_image = plain_model.path().join("photo.jpg");
    make_fifo(&fifo_image);
    let err = error_line(&[
        "preprocess",
        fifo_image.to_str().unwrap(),
        "--model",
        plain_model.path().to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--strict",
    ]);
    assert!(
        err.contains("photo.jpg: is a FIFO, not a regular file"),
        "{err}"
    );
}

#[test]
fn json_files_larger_than_the_cap_are_refused_unread() {
    let input = fixture("base_all_outputs", "inputs.safetensors");
    let model = model_copy("huge-config");
    let config = model.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let padded = text.replacen('{', &format!("{{{}", " ".repeat(9 << 20)), 1);
    std::fs::write(&config, padded).unwrap();
    let err = forward_error(model.path(), &input, &[]);
    assert!(
        err.contains("config.json: larger than the 8 MiB a JSON file may hold"),
        "{err}"
    );
}

/// Every file under `dir` with its bytes, to check that nothing changed.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn an_output_never_replaces_an_input_or_a_model_file() {
    let model = model_copy("protected-model");
    let work = TempDir::new("protected-work");
    let input = work.path().join("in.safetensors");
    std::fs::copy(fixture("base_all_outputs", "inputs.safetensors"), &input).unwrap();
    let image = work.path().join("photo.png");
    std::fs::copy(
        common::fixtures_dir().join("images/coffee_rgb_24x16.png"),
        &image,
    )
    .unwrap();
    let model_path = model.path().display().to_string();
    let in_model = |name: &str| model.path().join(name).display().to_string();
    // Files of the model folder, by several routes; each command's own input comes after.
    let mut outputs = vec![
        in_model("model.safetensors"),
        in_model("config.json"),
        // Absent, but the model would read one written there.
        in_model("preprocessor_config.json"),
        format!(
            "{}/../{}/config.json",
            model_path,
            model.path().file_name().unwrap().to_string_lossy()
        ),
    ];
    #[cfg(unix)]
    {
        let link = work.path().join("link.safetensors");
        std::os::unix::fs::symlink(model.path().join("model.safetensors"), &link).unwrap();
        let hard = work.path().join("hard.json");
        std::fs::hard_link(model.path().join("config.json"), &hard).unwrap();
        outputs.push(link.display().to_string());
        outputs.push(hard.display().to_string());
    }
    let before = (snapshot(model.path()), snapshot(work.path()));
    let input = input.display().to_string();
    let image = image.display().to_string();
    for output in &outputs {
        let err = error_line(&[
            "forward",
            "--model",
            &model_path,
            "--input",
            &input,
            "--output",
            output,
        ]);
        assert!(err.contains("refusing to write"), "forward {output}: {err}");
        for command in ["preprocess", "embed"] {
            let err = error_line(&[command, &image, "--model", &model_path, "--output", output]);
            assert!(
                err.contains("refusing to write"),
                "{command} {output}: {err}"
            );
        }
    }
    let err = error_line(&[
        "preprocess",
        &image,
        "--model",
        &model_path,
        "--output",
        &image,
    ]);
    assert!(err.contains("which this command reads"), "{err}");
    let err = error_line(&["embed", &image, "--model", &model_path, "--output", &image]);
    assert!(err.contains("which this command reads"), "{err}");
    assert!(
        before == (snapshot(model.path()), snapshot(work.path())),
        "a file changed"
    );
}

/// A tensor of a hand-made header: name, dtype and shape.
type HeaderTensor<'a> = (&'a str, &'a str, Vec<usize>);

/// Writes a safetensors file from a hand-made header: `(name, dtype, shape)` each, the data
/// left as a sparse hole (no disk space, no time), so a header may claim gigabytes.
fn write_header_only(path: &Path, tensors: &[HeaderTensor]) {
    let mut offset = 0usize;
    let mut header = serde_json::Map::new();
    for (name, dtype, shape) in tensors {
        let width = if *dtype == "F32" || *dtype == "I32" {
            4
        } else if *dtype == "I64" {
            8
        } else {
            1
        };
        let len = shape.iter().product::<usize>() * width;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    std::fs::write(path, &bytes).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len((bytes.len() + offset) as u64).unwrap();
}

#[test]
fn inputs_are_checked_against_the_model_before_their_data_is_read() {
    let dir = TempDir::new("input-headers");
    let base = common::fixtures_dir().join("base_all_outputs/model");
    let masked = common::fixtures_dir().join("mask_token/model");
    let classifier = common::fixtures_dir().join("classifier_ce/model");
    let pixels = |batch| ("pixel_values", "F32", vec![batch, 3, 32, 32]);
    let cases: Vec<(&Path, Vec<HeaderTensor>, &str)> = vec![
        // 4.8 GB claimed: refused from the header, in milliseconds.
        (
            &base,
            vec![("pixel_values", "F32", vec![1, 3, 20000, 20000])],
            "image size 20000x20000 doesn't match the model's 32x32",
        ),
        // The same with interpolation: refused by the memory budget, still unread.
        (
            &base,
            vec![("pixel_values", "F32", vec![1, 3, 20000, 20000])],
            "pixel_values takes 4.5 GiB as f32, over the memory budget of 1.0 GiB",
        ),
        (
            &masked,
            vec![pixels(2), ("bool_masked_pos", "BOOL", vec![4, 8])],
            "bool_masked_pos has shape [4, 8], expected [2, 16]",
        ),
        (
            &masked,
            vec![pixels(2), ("bool_masked_pos", "F32", vec![2, 16])],
            "bool_masked_pos has dtype F32, expected BOOL or U8",
        ),
        (
            &classifier,
            vec![pixels(2), ("labels", "I64", vec![1, 2])],
            "labels has shape [1, 2], expected [2] or [2, ",
        ),
        (
            &classifier,
            vec![pixels(2), ("labels", "U8", vec![2])],
            "labels has dtype U8",
        ),
        (
            &base,
            vec![pixels(1), ("head_mask", "F32", vec![4, 2])],
            "head_mask has shape [4, 2], expected [4] or [2, 4]",
        ),
        (
            &base,
            vec![pixels(1), ("labels", "I64", vec![1])],
            "labels given but the model has no classification head",
        ),
        (
            &base,
            vec![("pixel_values", "I64", vec![1, 3, 32, 32])],
            "pixel_values has dtype I64, expected F32 or F16 or BF16",
        ),
        (
            &base,
            vec![("pixel_values", "F32", vec![1; 100_000])],
            "pixel_values has shape [1, 1, 1, 1, 1, 1, 1, 1, …] (100000 dimensions)",
        ),
    ];
    let interpolated = ["--interpolate-pos-encoding", "--max-memory", "1G"];
    for (i, (model, tensors, expected)) in cases.into_iter().enumerate() {
        let input = dir.path().join(format!("{i}.safetensors"));
        write_header_only(&input, &tensors);
        let start = Instant::now();
        let extra: &[&str] = if expected.contains("as f32") {
            &interpolated
        } else {
            &[]
        };
        let err = forward_error(model, input.to_str().unwrap(), extra);
        assert!(err.contains(expected), "{tensors:.200?}: {err}");
        assert!(err.len() < 400, "{} bytes: {err:.400}", err.len());
        assert!(start.elapsed() < Duration::from_secs(10), "{err}");
    }
}

#[test]
fn thread_and_batch_counts_are_bounded() {
    let model = fixture("base_all_outputs", "model");
    let input = fixture("base_all_outputs", "inputs.safetensors");
    for threads in ["18446744073709551615", "5000"] {
        let err = error_line(&[
            "forward",
            "--model",
            &model,
            "--input",
            &input,
            "--output",
            "/dev/null",
            "--backend",
            "cpu",
            "--threads",
            threads,
        ]);
        assert!(err.contains("threads is above the limit of"), "{err}");
    }
    let options = BackendOptions {
        threads: Some(1 << 20),
        ..Default::default()
    };
    let err = vitmsn::internals::backend::create(BackendKind::Cpu, &options)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("1048576 threads is above the limit"),
        "{err}"
    );

    let err = error_line(&[
        "bench",
        "--arch",
        "vit-msn-small",
        "--iters",
        "18446744073709551615",
    ]);
    assert!(err.contains("at most 1000000 timed forwards"), "{err}");
    let err = error_line(&[
        "bench",
        "--arch",
        "vit-msn-small",
        "--batch",
        "18446744073709551615",
    ]);
    assert!(err.contains("is too large to compute"), "{err}");
    let err = error_line(&[
        "bench",
        "--arch",
        "vit-msn-small",
        "--batch",
        "100000",
        "--max-memory",
        "1G",
    ]);
    assert!(
        err.contains("needs 365.8 GiB of activations, over the memory budget of 1.0 GiB"),
        "{err}"
    );
}

/// The issue's 4097-token model: a batch of 100 with attentions asked for 27 GB at once.
#[test]
fn activations_over_the_memory_budget_are_refused_and_the_model_stays_usable() {
    let config = ViTMSNConfig::from_json(
        r#"{"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64,
            "num_hidden_layers": 1, "image_size": 64, "patch_size": 1}"#,
    )
    .unwrap();
    for kind in [BackendKind::Scalar, BackendKind::Cpu] {
        let options = BackendOptions {
            max_memory: Some(1 << 30),
            threads: (kind == BackendKind::Cpu).then_some(2),
            ..Default::default()
        };
        let backend = vitmsn::internals::backend::create(kind, &options).unwrap();
        let model = ViTMSN::new(config.clone(), &Weights::random(0), backend).unwrap();
        let input = |batch: usize| ForwardInput {
            pixel_values: Tensor::new(vec![batch, 3, 64, 64], vec![0.5; batch * 3 * 64 * 64]),
            output_attentions: true,
            ..Default::default()
        };
        let err = model.forward(&input(100)).unwrap_err().to_string();
        assert!(
            err.contains("GiB of activations, over the memory budget of 1.0 GiB"),
            "{kind:?}: {err}"
        );
        let out = model.forward(&input(1)).unwrap();
        assert_eq!(out.attentions[0].shape, [1, 4, 4097, 4097]);
    }
    // The fixture's weights take 96384 bytes, its forward with every output 109024.
    let model = fixture("base_all_outputs", "model");
    let input = fixture("base_all_outputs", "inputs.safetensors");
    for (budget, expected) in [
        (
            "1K",
            "the model's weights take 96384 bytes as f32, over the memory budget of 1024 bytes",
        ),
        (
            "100K",
            "this forward needs 109024 bytes of activations, over the memory budget of 102400 bytes",
        ),
    ] {
        let err = error_line(&[
            "forward",
            "--model",
            &model,
            "--input",
            &input,
            "--output",
            "/dev/null",
            "--output-attentions",
            "--output-hidden-states",
            "--max-memory",
            budget,
        ]);
        assert!(err.contains(expected), "{budget}: {err}");
    }
}

/// A copy of the sharded fixture model with its index's weight_map edited.
fn sharded_with(
    tag: &str,
    edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>),
) -> TempDir {
    let src = common::fixtures_dir().join("sharded/model");
    let dir = TempDir::new(tag);
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let index_path = dir.path().join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    edit(index["weight_map"].as_object_mut().unwrap());
    std::fs::write(&index_path, index.to_string()).unwrap();
    dir
}

#[test]
fn a_sharded_index_reads_each_tensor_from_its_shard_in_the_folder() {
    let input = fixture("sharded", "inputs.safetensors");
    for (shard, expected) in [
        (
            "/etc/passwd",
            "shard \"/etc/passwd\" is not a file name in the checkpoint folder",
        ),
        (
            "../model/model-00001-of-00005.safetensors",
            "is not a file name in the checkpoint folder",
        ),
        (
            "model-00001-of-00005.safetensors",
            "puts embeddings.cls_token in model-00001-of-00005.safetensors, which does not hold it",
        ),
    ] {
        let model = sharded_with("shard-path", |map| {
            map.insert("embeddings.cls_token".into(), shard.into());
        });
        let err = forward_error(model.path(), &input, &[]);
        assert!(err.contains(expected), "{shard}: {err}");
    }

    let model = sharded_with("twice", |map| {
        map.insert("unused.tensor".into(), "extra.safetensors".into());
    });
    write_f32_tensors(
        &model.path().join("extra.safetensors"),
        &[
            ("unused.tensor", vec![1]),
            ("embeddings.cls_token", vec![1, 1, 32]),
        ],
    );
    let err = forward_error(model.path(), &input, &[]);
    assert!(
        err.contains("embeddings.cls_token is in two shards"),
        "{err}"
    );

    // JSON allows a key twice; a map would keep the last silently.
    let model = sharded_with("listed-twice", |_| {});
    let index_path = model.path().join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index_path).unwrap();
    let twice = text.replacen(
        "\"weight_map\":{",
        "\"weight_map\":{\"embeddings.cls_token\":\"model-00001-of-00005.safetensors\",",
        1,
    );
    assert_ne!(twice, text, "the index is written compactly");
    std::fs::write(&index_path, twice).unwrap();
    let err = forward_error(model.path(), &input, &[]);
    assert!(
        err.contains("embeddings.cls_token is listed twice"),
        "{err}"
    );

    let model = sharded_with("not-a-string", |map| {
        map.insert("embeddings.cls_token".into(), 7.into());
    });
    let err = forward_error(model.path(), &input, &[]);
    assert!(
        err.contains("index.json: invalid type: integer `7`"),
        "{err}"
    );
}

#[test]
fn image_sizes_are_held_to_the_limits() {
    use vitmsn::preprocess::{Preprocessor, PreprocessorConfig};
    // A 1x100000 image is within the pixel limit, but --crop would first stretch it to
    // 256x25600000 (19 GB of RGB).
    let crop = Preprocessor::new(PreprocessorConfig::default(), 3)
        .unwrap()
        .with_crop(true);
    let err = crop.from_rgb8(1, 100_000, &[7; 300_000]).unwrap_err();
    assert!(
        err.to_string()
            .contains("--crop would first resize its 1x100000 pixels to 256x25600000"),
        "{err}"
    );
    let huge =
        PreprocessorConfig::from_json(r#"{"size": {"height": 4294967296, "width": 1}}"#).unwrap();
    let err = Preprocessor::new(huge, 3).unwrap_err();
    assert!(
        err.to_string()
            .contains("preprocessor size 4294967296x1 is over the limit of 8192 pixels a side"),
        "{err}"
    );

    // A file larger than any image within the pixel limit is refused unread (sparse here).
    let dir = TempDir::new("huge-image");
    let huge_file = dir.path().join("huge.png");
    let png = std::fs::read(common::fixtures_dir().join("images/coffee_rgb_24x16.png")).unwrap();
    std::fs::write(&huge_file, png).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&huge_file)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let small_limit = Preprocessor::new(PreprocessorConfig::default(), 3)
        .unwrap()
        .with_max_pixels(1000);
    let err = small_limit.load(&huge_file).unwrap_err();
    assert!(
        err.to_string()
            .contains("huge.png: 1073741824 bytes, more than an image of 1000 pixels can hold"),
        "{err}"
    );
}

/// Tensors are read, not memory-mapped: a checkpoint cut short under an open file is an
/// I/O error (a mapping would have died of SIGBUS at the first lost page).
#[test]
fn a_checkpoint_truncated_after_opening_is_an_error_not_a_crash() {
    let model = model_copy("truncated-later");
    let path = model.path().join("model.safetensors");
    let file = vitmsn::internals::safetensors_file::SafetensorsFile::open(&path).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    let entry = &file.tensors["layernorm.weight"];
    let err = file.f32_data(entry, "layernorm.weight").unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

/// Outputs go to a temporary file that is renamed over the old one: a write that fails
/// part-way (here the file size limit, which kills the process mid-write) leaves the
/// old file whole.
#[cfg(target_os = "linux")]
#[test]
fn a_failed_write_leaves_the_old_output_whole() {
    let dir = TempDir::new("failed-write");
    let output = dir.path().join("pixels.safetensors");
    std::fs::write(&output, b"the old output").unwrap();
    let image = common::fixtures_dir().join("images/coffee_rgb_24x16.png");
    let limited = std::process::Command::new("prlimit")
        .arg("--fsize=4096")
        .arg(env!("CARGO_BIN_EXE_vitmsn"))
        .args(["preprocess", image.to_str().unwrap(), "--model"])
        .arg(common::fixtures_dir().join("base_all_outputs/model"))
        .arg("--output")
        .arg(&output)
        .output()
        .expect("prlimit (util-linux) runs");
    assert!(
        !limited.status.success(),
        "the 12 KiB write succeeded under a 4 KiB limit"
    );
    assert_eq!(std::fs::read(&output).unwrap(), b"the old output");
}

/// A worker thread the system refuses to start is an error, not a panic: under a 100 MB
/// address-space limit, 64 threads' stacks (2 MiB each) cannot all be mapped, while two
/// threads run the same forward.
#[cfg(target_os = "linux")]
#[test]
fn threads_the_system_refuses_are_an_error() {
    let dir = TempDir::new("thread-limit");
    let output = dir.path().join("out.safetensors");
    let run = |threads: &str| {
        std::process::Command::new("prlimit")
            .arg("--as=100000000")
            .arg(env!("CARGO_BIN_EXE_vitmsn"))
            .args([
                "forward",
                "--backend",
                "cpu",
                "--threads",
                threads,
                "--quiet",
            ])
            .arg("--model")
            .arg(common::fixtures_dir().join("classifier_ce/model"))
            .arg("--input")
            .arg(common::fixtures_dir().join("classifier_ce/inputs.safetensors"))
            .arg("--output")
            .arg(&output)
            .output()
            .expect("prlimit (util-linux) runs")
    };
    let refused = run("64");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot start 64 CPU threads"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(run("2").status.success());
}

/// A link planted at the temporary file's name is never written through.
#[test]
fn a_planted_temporary_name_is_not_written_through() {
    let dir = TempDir::new("planted");
    let output = dir.path().join("out.safetensors");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    #[cfg(unix)]
    for n in 0..4 {
        let planted = format!(".out.safetensors.{}-{n}.partial", std::process::id());
        std::os::unix::fs::symlink(&victim, dir.path().join(planted)).unwrap();
    }
    let tensor = Tensor::new(vec![2], vec![1.0, 2.0]);
    vitmsn::internals::io::write_tensors(&output, &[("x", &tensor)], None).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let written = vitmsn::internals::safetensors_file::SafetensorsFile::open(&output).unwrap();
    assert_eq!(
        written.f32_data(&written.tensors["x"], "x").unwrap(),
        [1.0, 2.0]
    );
}

/// The text of every `.rs` file under `dir`.
fn rust_sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The names of the `#[test]` functions in `source`.
fn test_names(source: &str) -> Vec<String> {
    let mut lines = source.lines().map(str::trim);
    let mut names = Vec::new();
    while let Some(line) = lines.next() {
        if line != "#[test]" {
            continue;
        }
        let signature = lines
            .by_ref()
            .find(|l| l.starts_with("fn "))
            .unwrap_or_default();
        let name = signature
            .trim_start_matches("fn ")
            .split('(')
            .next()
            .unwrap_or_default();
        names.push(name.to_string());
    }
    names
}

#[test]
fn the_robustness_table_cites_tests_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/robustness.md")).unwrap();
    let cited: Vec<&str> = doc
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .filter(|l| !l.starts_with("| hostile") && !l.starts_with("| case"))
        .flat_map(|row| {
            let last = row.trim_end_matches('|').rsplit('|').next().unwrap();
            last.split('`').skip(1).step_by(2)
        })
        .collect();
    assert!(cited.len() >= 20, "{cited:?}");
    let mut sources = String::new();
    rust_sources(&root.join("src"), &mut sources);
    rust_sources(&root.join("tests"), &mut sources);
    let tests = test_names(&sources);
    for name in &cited {
        assert!(
            tests.iter().any(|t| t == name),
            "docs/robustness.md cites {name}, no such test"
        );
    }
    for file in [
        "tests/hostile.rs",
        "tests/mutation.rs",
        "tests/concurrency.rs",
    ] {
        let source = std::fs::read_to_string(root.join(file)).unwrap();
        for name in test_names(&source) {
            if name != "the_robustness_table_cites_tests_that_exist" {
                assert!(
                    cited.contains(&name.as_str()),
                    "{file}'s {name} is not in docs/robustness.md"
                );
            }
        }
    }
}
