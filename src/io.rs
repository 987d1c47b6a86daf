//! The CLI's tensor files: forward inputs read from, and outputs written to, safetensors.

use crate::error::{io_error, Error, Result};
use crate::loss::Labels;
use crate::model::{ForwardInput, ForwardOutput};
use crate::safetensors_file::SafetensorsFile;
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

/// Reads `pixel_values` (f32, f16 or bf16), and the optional `bool_masked_pos` (bool or
/// u8), `head_mask` (float) and `labels` (integer classes or float targets).
pub fn read_inputs(path: &Path) -> Result<ForwardInput> {
    let file = SafetensorsFile::open(path).map_err(as_input)?;
    let entry = |name: &str| file.tensors.get(name);
    let float = |name: &str| -> Result<Option<Tensor>> {
        entry(name)
            .map(|e| {
                Ok(Tensor::new(
                    e.shape.clone(),
                    file.f32_data(e, name).map_err(as_input)?.to_vec(),
                ))
            })
            .transpose()
    };
    let pixel_values = float("pixel_values")?
        .ok_or_else(|| Error::Input(format!("{} has no pixel_values tensor", path.display())))?;
    let bool_masked_pos = entry("bool_masked_pos")
        .map(|e| match e.dtype {
            Dtype::BOOL | Dtype::U8 => Ok(file.bytes(e)?.iter().map(|&b| b != 0).collect()),
            other => Err(Error::Input(format!(
                "bool_masked_pos has dtype {other:?}; expected BOOL or U8"
            ))),
        })
        .transpose()?;
    let labels = entry("labels")
        .map(|e| {
            let bytes = file.bytes(e)?;
            Ok(match e.dtype {
                Dtype::I64 => Labels::Classes(
                    bytes
                        .chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                        .collect(),
                ),
                Dtype::I32 => Labels::Classes(
                    bytes
                        .chunks_exact(4)
                        .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64)
                        .collect(),
                ),
                _ => Labels::Values(file.f32_data(e, "labels").map_err(as_input)?.to_vec()),
            })
        })
        .transpose()?;
    Ok(ForwardInput {
        pixel_values,
        bool_masked_pos,
        head_mask: float("head_mask")?,
        labels,
        ..Default::default()
    })
}

fn as_input(e: Error) -> Error {
    match e {
        Error::Weights(msg) => Error::Input(msg),
        other => other,
    }
}

/// Writes the outputs the CLI contract names, all f32: `last_hidden_state` or `logits`,
/// `loss`, `hidden_states.{i}` and `attentions.{i}`.
pub fn write_outputs(path: &Path, out: &ForwardOutput) -> Result<()> {
    let mut named: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
    let loss = out.loss.map(|l| [l]);
    if let Some(t) = &out.last_hidden_state {
        named.push(("last_hidden_state".into(), t.shape.clone(), &t.data));
    }
    if let Some(t) = &out.logits {
        named.push(("logits".into(), t.shape.clone(), &t.data));
    }
    if let Some(l) = &loss {
        named.push(("loss".into(), vec![], l));
    }
    for (i, t) in out.hidden_states.iter().enumerate() {
        named.push((format!("hidden_states.{i}"), t.shape.clone(), &t.data));
    }
    for (i, t) in out.attentions.iter().enumerate() {
        named.push((format!("attentions.{i}"), t.shape.clone(), &t.data));
    }
    let views = named
        .iter()
        .map(|(name, shape, data)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(data))
                .map_err(|e| Error::Input(format!("{name}: {e}")))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, None).map_err(|e| Error::Input(e.to_string()))?;
    std::fs::write(path, bytes).map_err(io_error(path))
}
