//! One memory-mapped `.safetensors` file, read without copying.

use crate::error::{io_error, Error, Result};
use crate::tensor::F32Data;
use memmap2::Mmap;
use safetensors::tensor::{Dtype, TensorInfo};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Header of a tensor inside a mapped file.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte offset of the data from the start of the file.
    pub byte_offset: usize,
    pub byte_len: usize,
}

pub struct SafetensorsFile {
    pub map: Arc<Mmap>,
    pub tensors: HashMap<String, TensorEntry>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(io_error(path))?;
        // SAFETY: the mapping is read-only; like every mmap-based loader we rely on the
        // checkpoint not being truncated while the model is alive.
        let map = unsafe { Mmap::map(&file) }.map_err(io_error(path))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&map)
            .map_err(|e| Error::Weights(format!("{}: not a valid safetensors file: {e}", path.display())))?;
        let data_start = 8 + header_len;
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, info): (String, &TensorInfo)| {
                let (start, end) = info.data_offsets;
                let entry = TensorEntry {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    byte_offset: data_start + start,
                    byte_len: end - start,
                };
                (name, entry)
            })
            .collect();
        Ok(Self { map: Arc::new(map), tensors })
    }

    pub fn bytes(&self, entry: &TensorEntry) -> &[u8] {
        &self.map[entry.byte_offset..entry.byte_offset + entry.byte_len]
    }

    /// The tensor as f32: F32 data that is 4-byte aligned is viewed in place, F16, BF16
    /// and unaligned F32 are converted. `what` names the tensor in errors.
    pub fn f32_data(&self, entry: &TensorEntry, what: &str) -> Result<F32Data> {
        let bytes = self.bytes(entry);
        let len = entry.shape.iter().product::<usize>();
        Ok(match entry.dtype {
            Dtype::F32 if entry.byte_offset % 4 == 0 => {
                F32Data::Mapped { map: self.map.clone(), byte_offset: entry.byte_offset, len }
            }
            Dtype::F32 => F32Data::Owned(bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()),
            Dtype::F16 => F32Data::Owned(
                bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            ),
            Dtype::BF16 => F32Data::Owned(
                bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            ),
            other => return Err(Error::Weights(format!("{what} has dtype {other:?}; expected F32, F16 or BF16"))),
        })
    }
}
