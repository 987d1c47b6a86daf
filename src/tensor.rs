//! Host tensors: f32 data with a shape.

use crate::error::{shape_text, Error, Result};

/// An owned f32 tensor in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The size of each dimension, outermost first.
    pub shape: Vec<usize>,
    /// The values, the last dimension varying fastest.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of `shape` holding `data`, or [`Error::Input`] when `data` does not hold
    /// exactly the values `shape` needs.
    ///
    /// ```
    /// use vitmsn::Tensor;
    /// assert!(Tensor::try_new(vec![2, 3], vec![0.0; 6]).is_ok());
    /// assert!(Tensor::try_new(vec![2, 3], vec![0.0; 5]).is_err());
    /// ```
    pub fn try_new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let values = shape
            .iter()
            .try_fold(1usize, |product, &dim| product.checked_mul(dim));
        if values != Some(data.len()) {
            return Err(Error::Input(format!(
                "a tensor of shape {} cannot hold {} values",
                shape_text(&shape),
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }

    /// [`Tensor::try_new`] for shapes known to be right.
    ///
    /// # Panics
    /// When `data` does not hold exactly the values `shape` needs.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self::try_new(shape, data).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Default for Tensor {
    /// An empty tensor of shape `[0]`.
    fn default() -> Self {
        Tensor::new(vec![0], Vec::new())
    }
}
