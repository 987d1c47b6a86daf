//! One `.safetensors` file: its header read and checked at open, each tensor read from
//! the file when asked for.
//!
//! Tensors are read, not memory-mapped. A mapping of a file that another process
//! truncates kills the process with SIGBUS at the next touch of a lost page; every
//! backend copies or repacks the weights at load anyway (the scalar backend, the
//! reference, keeps a plain copy), so reading costs no memory and only the time of a copy,
//! and a file changed under a running model cannot take its host down.

use crate::error::{io_error, one_line, Error, Result};
use crate::files;
use safetensors::tensor::{Dtype, Metadata};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The largest header read, as the safetensors crate allows.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Header of a tensor inside a file.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte offset of the data from the start of the file.
    pub byte_offset: u64,
    pub byte_len: usize,
}

pub struct SafetensorsFile {
    /// Behind a lock because a read seeks first.
    file: Mutex<File>,
    path: PathBuf,
    /// The file's size in bytes, header included.
    pub len: u64,
    pub tensors: HashMap<String, TensorEntry>,
}

impl SafetensorsFile {
    /// Reads and validates the header; tensor data is not touched. The header's offsets
    /// must cover the file exactly, so every tensor's bytes are in the file.
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = files::open_regular(path)?;
        let invalid = |why: String| {
            Error::Weights(format!(
                "{}: not a valid safetensors file: {why}",
                path.display()
            ))
        };
        let file_len = file.metadata().map_err(io_error(path))?.len();
        let mut length_bytes = [0u8; 8];
        if file_len < 8 {
            return Err(invalid("shorter than its 8-byte header length".into()));
        }
        file.read_exact(&mut length_bytes).map_err(io_error(path))?;
        let header_len = u64::from_le_bytes(length_bytes);
        if header_len > MAX_HEADER_BYTES || header_len > file_len - 8 {
            return Err(invalid(format!(
                "header length {header_len} for a file of {file_len} bytes"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(io_error(path))?;
        let header = std::str::from_utf8(&header).map_err(|e| invalid(e.to_string()))?;
        let metadata: Metadata =
            serde_json::from_str(header).map_err(|e| invalid(one_line(&e.to_string())))?;
        let data_start = 8 + header_len;
        if data_start + metadata.data_len() as u64 != file_len {
            return Err(invalid(format!(
                "the header describes {} bytes of data, the file holds {}",
                metadata.data_len(),
                file_len - data_start
            )));
        }
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (start, end) = info.data_offsets;
                let entry = TensorEntry {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    byte_offset: data_start + start as u64,
                    byte_len: end - start,
                };
                (name, entry)
            })
            .collect();
        Ok(Self {
            file: Mutex::new(file),
            path: path.to_path_buf(),
            len: file_len,
            tensors,
        })
    }

    /// Fills `buffer` from the file at `offset`.
    fn read_at(&self, offset: u64, buffer: &mut [u8]) -> Result<()> {
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(buffer))
            .map_err(io_error(&self.path))
    }

    /// The tensor's raw bytes.
    pub fn bytes(&self, entry: &TensorEntry) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; entry.byte_len];
        self.read_at(entry.byte_offset, &mut bytes)?;
        Ok(bytes)
    }

    /// Calls `f` on the tensor's values as f32, a block at a time, in order: an F32
    /// tensor is read in blocks of `F32_BLOCK` values, so converting it to a narrower
    /// format holds no f32 copy of it; others are read whole ([`Self::f32_data`]).
    pub fn for_each_f32_block(
        &self,
        entry: &TensorEntry,
        what: &str,
        f: &mut dyn FnMut(&[f32]),
    ) -> Result<()> {
        /// 256 KiB: few reads, and no large allocation to leave the heap fragmented.
        const F32_BLOCK: usize = 1 << 16;
        if entry.dtype != Dtype::F32 {
            f(&self.f32_data(entry, what)?);
            return Ok(());
        }
        let mut block = vec![0f32; F32_BLOCK.min(entry.byte_len / 4)];
        let mut offset = 0;
        while offset < entry.byte_len {
            let len = block.len().min((entry.byte_len - offset) / 4);
            let values = &mut block[..len];
            self.read_at(
                entry.byte_offset + offset as u64,
                bytemuck::cast_slice_mut(values),
            )?;
            for value in values.iter_mut() {
                *value = f32::from_bits(u32::from_le(value.to_bits()));
            }
            f(values);
            offset += len * 4;
        }
        Ok(())
    }

    /// The tensor as f32: F32 is read as is, F16 and BF16 converted. `what` names the
    /// tensor in errors.
    pub fn f32_data(&self, entry: &TensorEntry, what: &str) -> Result<Vec<f32>> {
        let convert = |width: usize, f: fn(&[u8]) -> f32| -> Result<Vec<f32>> {
            Ok(self.bytes(entry)?.chunks_exact(width).map(f).collect())
        };
        match entry.dtype {
            Dtype::F32 => {
                let mut values = vec![0f32; entry.byte_len / 4];
                self.read_at(entry.byte_offset, bytemuck::cast_slice_mut(&mut values))?;
                for value in &mut values {
                    *value = f32::from_bits(u32::from_le(value.to_bits()));
                }
                Ok(values)
            }
            Dtype::F16 => convert(2, |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
            Dtype::BF16 => convert(2, |b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            other => Err(Error::Weights(format!(
                "{what} has dtype {other:?}; expected F32, F16 or BF16"
            ))),
        }
    }
}
