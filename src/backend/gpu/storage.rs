//! How values are stored on the device: f32, or f16 when the precision asks for it, in
//! buffers padded to 16 bytes so any of them can be bound as `array<vec4<elem>>`. The
//! CPU-only precisions (bf16, int8) never reach here (`backend::create` refuses them); they
//! share f32's arms so that the matches stay exhaustive.

use crate::backend::Precision;

pub(super) fn wgsl_type(precision: Precision) -> &'static str {
    match precision {
        Precision::F32 | Precision::Bf16 | Precision::Int8 => "f32",
        Precision::F16 => "f16",
    }
}

pub(super) fn element_bytes(precision: Precision) -> u64 {
    match precision {
        Precision::F32 | Precision::Bf16 | Precision::Int8 => 4,
        Precision::F16 => 2,
    }
}

/// Bytes of a buffer holding `len` values.
pub(super) fn buffer_bytes(precision: Precision, len: usize) -> u64 {
    (len as u64 * element_bytes(precision))
        .next_multiple_of(16)
        .max(16)
}

/// Bytes that hold the first `len` values, rounded up to the 4-byte copy alignment.
pub(super) fn copy_bytes(precision: Precision, len: usize) -> u64 {
    (len as u64 * element_bytes(precision)).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT)
}

/// `data` in the storage type, zero-padded to the 4-byte copy alignment.
pub(super) fn encode(precision: Precision, data: &[f32]) -> Vec<u8> {
    let mut bytes: Vec<u8> = match precision {
        Precision::F32 | Precision::Bf16 | Precision::Int8 => bytemuck::cast_slice(data).to_vec(),
        Precision::F16 => data
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
    };
    bytes.resize(
        bytes
            .len()
            .next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT as usize),
        0,
    );
    bytes
}

/// The first `len` values of `bytes`, back in f32.
pub(super) fn decode(precision: Precision, bytes: &[u8], len: usize) -> Vec<f32> {
    match precision {
        Precision::F32 | Precision::Bf16 | Precision::Int8 => bytes
            .chunks_exact(4)
            .take(len)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Precision::F16 => bytes
            .chunks_exact(2)
            .take(len)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    }
}
