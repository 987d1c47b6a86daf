//! `vitmsn quantize`: a checkpoint whose weight matrices are stored as int8, for users who
//! care about memory and load time. It is about a quarter of an f32 checkpoint's size and
//! runs in int8 when loaded, without converting anything.

use crate::config::ViTMSNConfig;
use crate::error::{io_error, Error, Result};
use crate::files;
use crate::io::{write_atomically, write_views};
use crate::safetensors_file::TensorEntry;
use crate::weights::{scale_name, Weights};
use safetensors::tensor::{Dtype, TensorView};
use std::path::{Path, PathBuf};

/// What [`quantize_checkpoint`] wrote.
#[derive(Clone, Debug)]
pub struct QuantizeSummary {
    /// The checkpoint file written: `model.safetensors` in the output folder.
    pub file: PathBuf,
    /// How many weight matrices it holds as int8.
    pub int8_matrices: usize,
    /// The size of the model's safetensors file or shards, in bytes.
    pub bytes_before: u64,
    /// The size of the file written, in bytes.
    pub bytes_after: u64,
}

/// Writes the model in `model_dir` (a `save_pretrained` folder, one file or sharded) to
/// `output_dir` (created if needed) as a quantized checkpoint: `config.json` and
/// `preprocessor_config.json` (when present) copied, and one `model.safetensors` in which
/// every weight matrix the model multiplies by (the `Linear` weights and the patch
/// embedding's convolution: tensors named `*.weight` of rank 2 or more) is an I8 tensor of
/// the same shape beside its per-row scales `{name}_scale` (F32 `[rows]`), quantized as the
/// int8 precision quantizes at load, and every other tensor is kept as stored. Each
/// file is written to a temporary name, then renamed.
///
/// Refuses an output folder that is the model folder, and a checkpoint that already holds
/// int8 weights.
pub fn quantize_checkpoint(model_dir: &Path, output_dir: &Path) -> Result<QuantizeSummary> {
    let canonical = |dir: &Path| dir.canonicalize().ok();
    if canonical(output_dir).is_some() && canonical(output_dir) == canonical(model_dir) {
        return Err(Error::InvalidOption(format!(
            "refusing to write into {}: it is the model folder",
            output_dir.display()
        )));
    }
    let config_path = model_dir.join("config.json");
    // Only a checkpoint this engine loads is worth writing.
    ViTMSNConfig::from_file(&config_path)?;
    let weights = Weights::from_dir(model_dir)?;
    if weights.is_quantized() {
        return Err(Error::Weights(format!(
            "{} is already quantized: it holds int8 weights",
            model_dir.display()
        )));
    }
    let tensors = quantized_tensors(&weights)?;
    let int8_matrices = tensors.iter().filter(|t| t.dtype == Dtype::I8).count();
    let views = tensors
        .iter()
        .map(|t| {
            let view = TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map_err(|e| Error::Weights(format!("{}: {e}", t.name)))?;
            Ok((t.name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(output_dir).map_err(io_error(output_dir))?;
    let file = output_dir.join("model.safetensors");
    let bytes_after = write_views(&file, views, None)?;
    copy_json(&config_path, &output_dir.join("config.json"))?;
    let preprocessor = model_dir.join("preprocessor_config.json");
    if preprocessor.exists() {
        copy_json(&preprocessor, &output_dir.join("preprocessor_config.json"))?;
    }
    Ok(QuantizeSummary {
        file,
        int8_matrices,
        bytes_before: weights.file_bytes(),
        bytes_after,
    })
}

/// One tensor of the output file.
struct StoredTensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// The checkpoint's tensors as the quantized file holds them: each weight matrix as int8
/// values and f32 scales, the others as stored.
fn quantized_tensors(weights: &Weights) -> Result<Vec<StoredTensor>> {
    let mut tensors = Vec::new();
    for (name, entry) in weights.tensors() {
        if !is_weight_matrix(name, entry) {
            tensors.push(StoredTensor {
                name: name.to_string(),
                dtype: entry.dtype,
                shape: entry.shape.clone(),
                bytes: weights.stored_bytes(name, &entry.shape)?,
            });
            continue;
        }
        let scales_name = scale_name(name);
        if weights.contains(&scales_name) {
            return Err(Error::Weights(format!(
                "{name} would get scales named {scales_name}, a tensor the checkpoint already holds"
            )));
        }
        // The same quantization as `--precision int8` on this checkpoint, so the two run
        // the same numbers.
        let (values, scales) = weights.get_int8(name, &entry.shape)?;
        tensors.push(StoredTensor {
            name: name.to_string(),
            dtype: Dtype::I8,
            shape: entry.shape.clone(),
            bytes: values.iter().map(|&q| q as u8).collect(),
        });
        tensors.push(StoredTensor {
            name: scales_name,
            dtype: Dtype::F32,
            shape: vec![scales.len()],
            bytes: scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
        });
    }
    Ok(tensors)
}

/// Whether the model multiplies by this tensor as a matrix (loads it as a `Linear`
/// weight): a float `*.weight` of rank 2 or more. LayerNorm weights are vectors, and the
/// embeddings' tokens and position table are not named `weight`.
fn is_weight_matrix(name: &str, entry: &TensorEntry) -> bool {
    name.ends_with(".weight")
        && entry.shape.len() >= 2
        && matches!(entry.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

/// Copies a JSON file of the model folder, read as the loader reads it.
fn copy_json(from: &Path, to: &Path) -> Result<()> {
    write_atomically(to, files::read_json_text(from)?.as_bytes())
}
