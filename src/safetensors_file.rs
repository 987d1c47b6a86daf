//! One `.safetensors` file. Each tensor is memory-mapped on its own when asked for, so a
//! backend that repacks a weight and drops the original gives its pages back at once.

use crate::error::{io_error, Error, Result};
use crate::tensor::F32Data;
use memmap2::{Mmap, MmapOptions};
use safetensors::tensor::{Dtype, TensorInfo};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Header of a tensor inside a file.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte offset of the data from the start of the file.
    pub byte_offset: usize,
    pub byte_len: usize,
}

pub struct SafetensorsFile {
    file: File,
    path: PathBuf,
    pub tensors: HashMap<String, TensorEntry>,
}

/// Mappings start on this boundary (the largest common page size).
const MAP_ALIGN: usize = 64 * 1024;

/// Maps `len` bytes of `file` from `offset` read-only.
fn map(file: &File, path: &Path, offset: usize, len: usize) -> Result<Mmap> {
    // SAFETY: the mapping is read-only; like every mmap-based loader we rely on the
    // checkpoint not being truncated while the model is alive.
    unsafe { MmapOptions::new().offset(offset as u64).len(len).map(file) }.map_err(io_error(path))
}

impl SafetensorsFile {
    /// Reads and validates the header; tensor data is not touched.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(io_error(path))?;
        let file_len = file.metadata().map_err(io_error(path))?.len() as usize;
        let whole = map(&file, path, 0, file_len)?;
        let (header_len, metadata) = SafeTensors::read_metadata(&whole).map_err(|e| {
            Error::Weights(format!(
                "{}: not a valid safetensors file: {e}",
                path.display()
            ))
        })?;
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
        Ok(Self {
            file,
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// A mapping holding the tensor, and where its data starts inside it.
    fn map_tensor(&self, entry: &TensorEntry) -> Result<(Arc<Mmap>, usize)> {
        let start = entry.byte_offset / MAP_ALIGN * MAP_ALIGN;
        let skip = entry.byte_offset - start;
        Ok((
            Arc::new(map(
                &self.file,
                &self.path,
                start,
                skip + entry.byte_len.max(1),
            )?),
            skip,
        ))
    }

    /// A copy of the tensor's raw bytes.
    pub fn bytes(&self, entry: &TensorEntry) -> Result<Vec<u8>> {
        let (map, skip) = self.map_tensor(entry)?;
        Ok(map[skip..skip + entry.byte_len].to_vec())
    }

    /// The tensor as f32: F32 data that is 4-byte aligned is viewed in place, F16, BF16
    /// and unaligned F32 are converted. `what` names the tensor in errors.
    pub fn f32_data(&self, entry: &TensorEntry, what: &str) -> Result<F32Data> {
        let len = entry.shape.iter().product::<usize>();
        let (map, skip) = self.map_tensor(entry)?;
        let bytes = &map[skip..skip + entry.byte_len];
        let convert = |width: usize, f: fn(&[u8]) -> f32| {
            F32Data::Owned(bytes.chunks_exact(width).map(f).collect())
        };
        Ok(match entry.dtype {
            Dtype::F32 if skip % 4 == 0 => F32Data::Mapped {
                map: map.clone(),
                byte_offset: skip,
                len,
            },
            Dtype::F32 => convert(4, |b| f32::from_le_bytes(b.try_into().unwrap())),
            Dtype::F16 => convert(2, |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
            Dtype::BF16 => convert(2, |b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            other => {
                return Err(Error::Weights(format!(
                    "{what} has dtype {other:?}; expected F32, F16 or BF16"
                )))
            }
        })
    }
}
