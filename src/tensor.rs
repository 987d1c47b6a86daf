//! Host tensors: f32 data with a shape.

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
