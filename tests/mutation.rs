//! Deterministic mutation tests (issue 18): the committed fixtures, mutated by a seeded
//! generator, through every loader: config.json, safetensors headers (weights and
//! inputs), preprocessor_config.json and image bytes. Each case must end in an error or
//! an answer, never a panic; with the scalar backend on a 256 MiB budget, none can take
//! much memory. The seeds are fixed, so a failure names a case that reproduces.

mod common;

use common::TempDir;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use vitmsn::internals::io::read_inputs;
use vitmsn::preprocess::{Preprocessor, PreprocessorConfig};
use vitmsn::{BackendKind, BackendOptions, ViTMSN, ViTMSNConfig};

/// xorshift64*: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// JSON values a hostile file might hold where a size, a name or a list is expected.
const HOSTILE_JSON: [&str; 20] = [
    "0",
    "-1",
    "1",
    "3",
    "2147483648",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "-0.0",
    "\"gelu\"",
    "\"\"",
    "[]",
    "[0, 0]",
    "[1, 100000000]",
    "[18446744073709551615, 2]",
    "{}",
    "{\"height\": 4294967296, \"width\": 1}",
    "null",
    "true",
];

/// One byte-level mutation of `bytes` within `region` (clamped to the data): a bit flip,
/// an interesting byte, a truncation, a deleted or duplicated span, or inserted digits.
fn mutate_bytes(rng: &mut Rng, bytes: &[u8], region: std::ops::Range<usize>) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let end = region.end.min(out.len());
    let start = region.start.min(end.saturating_sub(1));
    let at = start + rng.below(end - start);
    match rng.below(6) {
        0 => out[at] ^= 1 << rng.below(8),
        1 => out[at] = *rng.pick(&[0, 0xff, b'9', b'[', b'"', b'-', b'}', b',']),
        2 => out.truncate(at),
        3 => {
            let len = 1 + rng.below(16);
            out.drain(at..(at + len).min(end));
        }
        4 => {
            let len = 1 + rng.below(32);
            let span: Vec<u8> = out[at..(at + len).min(end)].to_vec();
            out.splice(at..at, span);
        }
        _ => {
            let digits = "9".repeat(1 + rng.below(24));
            out.splice(at..at, digits.bytes());
        }
    }
    out
}

/// One structured mutation of a JSON object: a key (existing, or one of `fields`) set to
/// a hostile value, or removed.
fn mutate_json(rng: &mut Rng, json: &serde_json::Value, fields: &[&str]) -> serde_json::Value {
    let mut json = json.clone();
    let object = json.as_object_mut().expect("fixtures are objects");
    let mut keys: Vec<String> = object.keys().cloned().collect();
    keys.extend(fields.iter().map(|f| f.to_string()));
    let key = rng.pick(&keys).clone();
    if rng.below(8) == 0 {
        object.remove(&key);
    } else {
        let hostile: &&str = rng.pick(&HOSTILE_JSON);
        let value = serde_json::from_str(hostile).expect("valid JSON");
        object.insert(key, value);
    }
    json
}

/// A safetensors file with one structured mutation of its header (a tensor's shape,
/// dtype or offsets changed, the tensor renamed or removed), its data kept.
fn mutate_safetensors_header(rng: &mut Rng, bytes: &[u8], names: &[&str]) -> Vec<u8> {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let object = header.as_object_mut().unwrap();
    let tensors: Vec<String> = object
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let tensor = rng.pick(&tensors).clone();
    let shapes = [
        "[]",
        "[0]",
        "[1]",
        "[4294967296, 4294967296]",
        "[2, 16]",
        "[1, 3, 32, 32]",
        "[1, 3, 20000, 20000]",
        "[2, 3, 48, 40]",
        "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]",
    ];
    match rng.below(6) {
        0 | 1 => {
            let shape: &&str = rng.pick(&shapes);
            object[&tensor]["shape"] = serde_json::from_str(shape).unwrap();
        }
        2 => {
            let dtypes = [
                "F32", "F16", "BF16", "I64", "I32", "BOOL", "U8", "F64", "XYZ",
            ];
            object[&tensor]["dtype"] = (*rng.pick(&dtypes)).into();
        }
        3 => {
            let a = rng.below(1 << 20);
            let b = rng.pick(&[a, a + 4, 0, usize::MAX >> 1]).to_owned();
            object[&tensor]["data_offsets"] = serde_json::json!([a, b]);
        }
        4 => {
            let value = object.remove(&tensor).unwrap();
            object.insert(rng.pick(names).to_string(), value);
        }
        _ => {
            object.remove(&tensor);
        }
    }
    let text = header.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + header_len..]);
    out
}

/// Runs `case`, turning a panic into a failure that names the case; returns what the
/// case returns: whether it ended in an answer rather than an error.
fn no_panic(what: &str, case: usize, run: impl FnOnce() -> bool) -> bool {
    catch_unwind(AssertUnwindSafe(run))
        .unwrap_or_else(|_| panic!("{what} case {case} panicked (see the message above)"))
}

/// Counts the cases that ended in an answer; both outcomes must occur, or the mutations
/// are too mild (nothing fails) or too blunt (nothing gets past the first check).
#[derive(Default)]
struct Outcomes {
    answered: usize,
    cases: usize,
}

impl Outcomes {
    fn add(&mut self, answered: bool) {
        self.answered += answered as usize;
        self.cases += 1;
    }

    fn check(&self, what: &str) {
        assert!(
            self.answered > 0 && self.answered < self.cases,
            "{what}: {} of {} cases answered",
            self.answered,
            self.cases
        );
        eprintln!("{what}: {} of {} cases answered", self.answered, self.cases);
    }
}

fn options() -> BackendOptions {
    BackendOptions {
        max_memory: Some(256 << 20),
        ..Default::default()
    }
}

/// Loads the model in `dir` and, if it loads, runs `input` through it; whether that
/// gave an output.
fn load_and_run(dir: &Path, input: &Path, interpolate: bool) -> bool {
    let Ok(model) = ViTMSN::from_dir(dir, BackendKind::Scalar, &options()) else {
        return false;
    };
    let spec = model.input_spec(interpolate);
    let Ok(mut input) = read_inputs(input, &spec) else {
        return false;
    };
    input.interpolate_pos_encoding = interpolate;
    model.forward(&input).is_ok()
}

const CASES: usize = 1500;

#[test]
fn mutated_configs_load_or_fail_cleanly() {
    let src = common::fixtures_dir().join("classifier_ce");
    let dir = TempDir::new("mutated-config");
    std::fs::copy(
        src.join("model/model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let text = std::fs::read_to_string(src.join("model/config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let fields = ["image_size", "patch_size", "num_labels", "problem_type"];
    let mut rng = Rng(0x5EED_C0F1);
    let mut outcomes = Outcomes::default();
    for case in 0..CASES {
        let mutated = if case % 3 == 0 {
            mutate_bytes(&mut rng, text.as_bytes(), 0..text.len())
        } else {
            mutate_json(&mut rng, &json, &fields)
                .to_string()
                .into_bytes()
        };
        std::fs::write(dir.path().join("config.json"), &mutated).unwrap();
        outcomes.add(no_panic("config.json", case, || {
            let _ = ViTMSNConfig::from_json(&String::from_utf8_lossy(&mutated));
            load_and_run(dir.path(), &src.join("inputs.safetensors"), case % 2 == 0)
        }));
    }
    outcomes.check("config.json");
}

#[test]
fn mutated_weight_headers_load_or_fail_cleanly() {
    let src = common::fixtures_dir().join("base_all_outputs");
    let dir = TempDir::new("mutated-weights");
    std::fs::copy(
        src.join("model/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(src.join("model/model.safetensors")).unwrap();
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let names = [
        "embeddings.cls_token",
        "layernorm.weight",
        "embeddings.mask_token",
    ];
    let mut rng = Rng(0x5EED_3E16);
    let mut outcomes = Outcomes::default();
    for case in 0..CASES {
        let mutated = if case % 2 == 0 {
            mutate_bytes(&mut rng, &bytes, 0..header_end)
        } else {
            mutate_safetensors_header(&mut rng, &bytes, &names)
        };
        std::fs::write(dir.path().join("model.safetensors"), &mutated).unwrap();
        outcomes.add(no_panic("model.safetensors", case, || {
            load_and_run(dir.path(), &src.join("inputs.safetensors"), false)
        }));
    }
    outcomes.check("model.safetensors");
}

#[test]
fn mutated_input_tensors_run_or_fail_cleanly() {
    let dir = TempDir::new("mutated-inputs");
    let names = ["pixel_values", "bool_masked_pos", "head_mask", "labels"];
    let mut rng = Rng(0x5EED_1A7E);
    let mut outcomes = Outcomes::default();
    for fixture in ["mask_token", "classifier_ce", "head_mask_2d"] {
        let src = common::fixtures_dir().join(fixture);
        let model = ViTMSN::from_dir(src.join("model"), BackendKind::Scalar, &options()).unwrap();
        let bytes = std::fs::read(src.join("inputs.safetensors")).unwrap();
        let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let path = dir.path().join("in.safetensors");
        for case in 0..CASES / 3 {
            let mutated = match case % 3 {
                0 => mutate_bytes(&mut rng, &bytes, 0..header_end),
                1 => mutate_bytes(&mut rng, &bytes, header_end..bytes.len()),
                _ => mutate_safetensors_header(&mut rng, &bytes, &names),
            };
            std::fs::write(&path, &mutated).unwrap();
            let interpolate = rng.below(2) == 0;
            let attentions = rng.below(2) == 0;
            outcomes.add(no_panic(fixture, case, || {
                let spec = model.input_spec(interpolate);
                let Ok(mut input) = read_inputs(&path, &spec) else {
                    return false;
                };
                input.interpolate_pos_encoding = interpolate;
                input.output_attentions = attentions;
                model.forward(&input).is_ok()
            }));
        }
    }
    outcomes.check("inputs.safetensors");
}

#[test]
fn mutated_images_decode_or_fail_cleanly() {
    let images = common::fixtures_dir().join("images");
    let preprocessor = Preprocessor::new(PreprocessorConfig::default(), 3).unwrap();
    let mut rng = Rng(0x5EED_1316);
    let mut outcomes = Outcomes::default();
    for name in [
        "coffee_rgb_24x16.png",
        "coffee_small_64x48.jpg",
        "astronaut_anim_trns_48.gif",
        "chelsea_lossy_90x60.webp",
        "hubble_rgb_80x70.bmp",
        "coffee_rgb_lzw_80x60.tif",
    ] {
        let bytes = std::fs::read(images.join(name)).unwrap();
        for case in 0..CASES / 6 {
            // Most format headers sit in the first bytes; mutate there more often.
            let region = if case % 2 == 0 { 0..64 } else { 0..bytes.len() };
            let mutated = mutate_bytes(&mut rng, &bytes, region);
            outcomes.add(no_panic(name, case, || {
                preprocessor.from_bytes(&mutated).is_ok()
            }));
        }
    }
    outcomes.check("image bytes");
}

#[test]
fn mutated_preprocessor_configs_load_or_fail_cleanly() {
    let mut rng = Rng(0x5EED_960F);
    let mut outcomes = Outcomes::default();
    let png = std::fs::read(common::fixtures_dir().join("images/coffee_rgb_24x16.png")).unwrap();
    let json = serde_json::json!({
        "do_resize": true, "size": {"height": 32, "width": 32}, "resample": 2,
        "do_rescale": true, "rescale_factor": 0.00392156862745098, "do_normalize": true,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]
    });
    for case in 0..CASES / 3 {
        let mutated = mutate_json(&mut rng, &json, &["crop_size", "do_center_crop"]);
        outcomes.add(no_panic("preprocessor_config.json", case, || {
            let Ok(config) = PreprocessorConfig::from_json(&mutated.to_string()) else {
                return false;
            };
            Preprocessor::new(config, 3).is_ok_and(|p| p.from_bytes(&png).is_ok())
        }));
    }
    outcomes.check("preprocessor_config.json");
}
