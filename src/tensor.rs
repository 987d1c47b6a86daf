//! Host tensors: f32 data with a shape, owned or viewed in a memory-mapped file.

use memmap2::Mmap;
use std::ops::Deref;
use std::sync::Arc;

/// An owned f32 tensor in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor shape {shape:?} vs {} values",
            data.len()
        );
        Self { shape, data }
    }
}

impl Default for Tensor {
    /// An empty tensor of shape `[0]`.
    fn default() -> Self {
        Tensor::new(vec![0], Vec::new())
    }
}

/// f32 values that either live in a memory-mapped checkpoint (read in place, no copy)
/// or were converted or assembled into memory.
#[derive(Clone)]
pub enum F32Data {
    Mapped {
        map: Arc<Mmap>,
        byte_offset: usize,
        len: usize,
    },
    Owned(Vec<f32>),
}

impl Deref for F32Data {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            F32Data::Mapped {
                map,
                byte_offset,
                len,
            } => {
                // `Weights` only builds this variant after checking 4-byte alignment.
                bytemuck::cast_slice(&map[*byte_offset..byte_offset + len * 4])
            }
            F32Data::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for F32Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if matches!(self, F32Data::Mapped { .. }) {
            "mapped"
        } else {
            "owned"
        };
        write!(f, "F32Data({kind}, {} values)", self.len())
    }
}
