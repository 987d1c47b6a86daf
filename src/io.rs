//! The CLI's tensor files: forward inputs read from, and outputs written to, safetensors.

use crate::backend::memory::size_text;
use crate::config::{MAX_IMAGE_SIDE, MAX_TOKENS};
use crate::error::{io_error, shape_text, Error, Result};
use crate::loss::Labels;
use crate::model::{ForwardInput, ForwardOutput, InputSpec};
use crate::safetensors_file::{SafetensorsFile, TensorEntry};
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype, TensorView};
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Reads `pixel_values` (f32, f16 or bf16), and the optional `bool_masked_pos` (bool or
/// u8), `head_mask` (float) and `labels` (integer classes or float targets), after
/// checking every one's dtype and shape in the file's header against `spec`, so a tensor
/// the model cannot take is refused before its data is read.
pub fn read_inputs(path: &Path, spec: &InputSpec) -> Result<ForwardInput> {
    let file = SafetensorsFile::open(path).map_err(as_input)?;
    let entry = |name: &str| file.tensors.get(name);
    let pixels = entry("pixel_values")
        .ok_or_else(|| Error::Input(format!("{} has no pixel_values tensor", path.display())))?;
    let (batch, patches) = check_pixel_values(pixels, spec)?;
    let mask = entry("bool_masked_pos");
    if let Some(mask) = mask {
        check_dtype("bool_masked_pos", mask, &[Dtype::BOOL, Dtype::U8])?;
        check_shape("bool_masked_pos", mask, &[vec![batch, patches]])?;
        if !spec.has_mask_token {
            return Err(Error::Input(
                "bool_masked_pos given but the checkpoint has no embeddings.mask_token".into(),
            ));
        }
    }
    let head_mask = entry("head_mask");
    if let Some(head_mask) = head_mask {
        check_dtype("head_mask", head_mask, &FLOATS)?;
        let (layers, heads) = (spec.num_layers, spec.num_heads);
        check_shape("head_mask", head_mask, &[vec![heads], vec![layers, heads]])?;
    }
    let labels = entry("labels");
    if let Some(labels) = labels {
        let Some(num_labels) = spec.num_labels else {
            return Err(Error::Input(
                "labels given but the model has no classification head".into(),
            ));
        };
        let kinds = [Dtype::I64, Dtype::I32, Dtype::F32, Dtype::F16, Dtype::BF16];
        check_dtype("labels", labels, &kinds)?;
        check_shape("labels", labels, &[vec![batch], vec![batch, num_labels]])?;
    }
    let float = |e: &TensorEntry, name: &str| -> Result<Tensor> {
        let data = file.f32_data(e, name).map_err(as_input)?;
        Ok(Tensor::new(e.shape.clone(), data))
    };
    let bool_masked_pos = mask
        .map(|e| Ok::<_, Error>(file.bytes(e)?.iter().map(|&b| b != 0).collect()))
        .transpose()?;
    let labels = labels
        .map(|e| {
            let bytes = file.bytes(e)?;
            Ok::<_, Error>(match e.dtype {
                Dtype::I64 => Labels::Classes(
                    bytes
                        .chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                        .collect(),
                ),
                Dtype::I32 => Labels::Classes(
                    bytes
                        .chunks_exact(4)
                        .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
                        .collect(),
                ),
                _ => Labels::Values(file.f32_data(e, "labels").map_err(as_input)?),
            })
        })
        .transpose()?;
    Ok(ForwardInput {
        pixel_values: float(pixels, "pixel_values")?,
        bool_masked_pos,
        head_mask: head_mask.map(|e| float(e, "head_mask")).transpose()?,
        labels,
        ..Default::default()
    })
}

const FLOATS: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::BF16];

/// Checks `pixel_values`' header against the model; returns the batch and the number of
/// patches of each image.
fn check_pixel_values(entry: &TensorEntry, spec: &InputSpec) -> Result<(usize, usize)> {
    check_dtype("pixel_values", entry, &FLOATS)?;
    let channels = spec.num_channels;
    let &[batch, given_channels, height, width] = entry.shape.as_slice() else {
        return Err(Error::Input(format!(
            "pixel_values has shape {}, expected [batch, {channels}, height, width]",
            shape_text(&entry.shape)
        )));
    };
    if batch == 0 {
        return Err(Error::Input("pixel_values holds an empty batch".into()));
    }
    if given_channels != channels {
        return Err(Error::Input(format!(
            "pixel_values has {given_channels} channels, the model expects {channels}"
        )));
    }
    match spec.image_size {
        Some((h, w)) if (height, width) != (h, w) => {
            return Err(Error::Input(format!(
                "image size {height}x{width} doesn't match the model's {h}x{w}; pass --interpolate-pos-encoding"
            )))
        }
        _ => {}
    }
    let f32_bytes = [batch, channels, height, width]
        .iter()
        .fold(4u64, |bytes, &dim| bytes.saturating_mul(dim as u64));
    if let Some(budget) = spec.memory_budget.filter(|&budget| f32_bytes > budget) {
        return Err(Error::Input(format!(
            "pixel_values takes {} as f32, over the memory budget of {}; use a smaller batch or image, or raise --max-memory",
            size_text(f32_bytes),
            size_text(budget)
        )));
    }
    let patch = spec.patch_size;
    if height < patch || width < patch {
        return Err(Error::Input(format!(
            "image {height}x{width} is smaller than one {patch}x{patch} patch"
        )));
    }
    let patches = (height / patch).saturating_mul(width / patch);
    if height.max(width) > MAX_IMAGE_SIDE || patches >= MAX_TOKENS {
        return Err(Error::Input(format!(
            "image {height}x{width} makes {patches} patches of {patch}x{patch}; this engine takes sides up to {MAX_IMAGE_SIDE} and fewer than {MAX_TOKENS} tokens"
        )));
    }
    Ok((batch, patches))
}

fn check_dtype(name: &str, entry: &TensorEntry, accepted: &[Dtype]) -> Result<()> {
    if accepted.contains(&entry.dtype) {
        return Ok(());
    }
    let names: Vec<String> = accepted.iter().map(|d| format!("{d:?}")).collect();
    Err(Error::Input(format!(
        "{name} has dtype {:?}, expected {}",
        entry.dtype,
        names.join(" or ")
    )))
}

/// Requires the tensor to have one of the `expected` shapes, as transformers does.
fn check_shape(name: &str, entry: &TensorEntry, expected: &[Vec<usize>]) -> Result<()> {
    if expected.contains(&entry.shape) {
        return Ok(());
    }
    let expected: Vec<String> = expected.iter().map(|s| shape_text(s)).collect();
    Err(Error::Input(format!(
        "{name} has shape {}, expected {}",
        shape_text(&entry.shape),
        expected.join(" or ")
    )))
}

fn as_input(e: Error) -> Error {
    match e {
        Error::Weights(msg) => Error::Input(msg),
        other => other,
    }
}

/// The outputs the CLI contract names, in order: `last_hidden_state` or `logits`, `loss`
/// (shape `[]`), `hidden_states.{i}` and `attentions.{i}`.
pub fn named_outputs(out: &ForwardOutput) -> Vec<(String, Cow<'_, Tensor>)> {
    let mut named: Vec<(String, Cow<Tensor>)> = Vec::new();
    if let Some(t) = &out.last_hidden_state {
        named.push(("last_hidden_state".into(), Cow::Borrowed(t)));
    }
    if let Some(t) = &out.logits {
        named.push(("logits".into(), Cow::Borrowed(t)));
    }
    if let Some(loss) = out.loss {
        named.push(("loss".into(), Cow::Owned(Tensor::new(vec![], vec![loss]))));
    }
    for (i, t) in out.hidden_states.iter().enumerate() {
        named.push((format!("hidden_states.{i}"), Cow::Borrowed(t)));
    }
    for (i, t) in out.attentions.iter().enumerate() {
        named.push((format!("attentions.{i}"), Cow::Borrowed(t)));
    }
    named
}

/// Writes the outputs [`named_outputs`] lists, all f32.
pub fn write_outputs(path: &Path, out: &ForwardOutput) -> Result<()> {
    let named = named_outputs(out);
    let tensors: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), &**t)).collect();
    write_tensors(path, &tensors, None)
}

/// Writes f32 tensors, and optional string metadata, as one safetensors file. The bytes go
/// to a temporary file beside `path` that is then renamed over it, so a failed write
/// leaves any earlier file whole.
pub fn write_tensors(
    path: &Path,
    tensors: &[(&str, &Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, t)| {
            let view = TensorView::new(Dtype::F32, t.shape.clone(), bytemuck::cast_slice(&t.data))
                .map_err(|e| Error::Input(format!("{name}: {e}")))?;
            Ok((name.to_string(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    write_views(path, views, metadata).map(|_| ())
}

/// Writes tensors of any dtype as one safetensors file, as [`write_tensors`] does, and
/// returns the file's size in bytes.
pub(crate) fn write_views(
    path: &Path,
    views: Vec<(String, TensorView<'_>)>,
    metadata: Option<HashMap<String, String>>,
) -> Result<u64> {
    let bytes = safetensors::serialize(views, metadata).map_err(|e| Error::Input(e.to_string()))?;
    write_atomically(path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    // A device or pipe (`/dev/null`, `/dev/stdout`) is written to, never replaced.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return std::fs::write(path, bytes).map_err(io_error(path));
    }
    let name = path.file_name().ok_or_else(|| Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
    })?;
    let (temporary, mut file) = create_temporary(path, name)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map_err(io_error(path))
}

/// Creates a new temporary file beside `path`. It is created exclusively, so a name that
/// exists (another writer's, or a link planted to redirect the write) is never opened:
/// the next name is tried.
fn create_temporary(path: &Path, name: &std::ffi::OsStr) -> Result<(PathBuf, std::fs::File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut last_error = None;
    for _ in 0..100 {
        let mut temporary_name = std::ffi::OsString::from(".");
        temporary_name.push(name);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        temporary_name.push(format!(".{}-{n}.partial", std::process::id()));
        let temporary = path.with_file_name(temporary_name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)
        {
            Ok(file) => return Ok((temporary, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(io_error(&temporary)(e)),
        }
    }
    Err(io_error(path)(
        last_error.expect("a hundred names were tried"),
    ))
}
