//! vitmsn: an inference engine for ViTMSN (Masked Siamese Networks, Assran et al. 2022),
//! computing exactly what transformers' `ViTMSNModel` and `ViTMSNForImageClassification`
//! compute, on hand-written CPU kernels or WGSL shaders.
//!
//! ```no_run
//! use vitmsn::{BackendKind, BackendOptions, ForwardInput, Tensor, ViTMSN};
//! let mut model = ViTMSN::from_dir("model_dir".as_ref(), BackendKind::Scalar, &BackendOptions::default())?;
//! let pixels = Tensor::new(vec![1, 3, 224, 224], vec![0.0; 3 * 224 * 224]);
//! let out = model.forward(&ForwardInput { pixel_values: pixels, ..Default::default() })?;
//! # Ok::<(), vitmsn::Error>(())
//! ```

pub mod backend;
pub mod bench;
pub mod config;
pub mod error;
pub mod executor;
pub mod fewshot;
pub mod files;
pub mod graph;
pub mod interpolate;
pub mod io;
pub mod loss;
pub mod model;
pub mod pipeline;
pub mod plan;
pub mod predict;
pub mod preprocess;
pub mod safetensors_file;
pub mod tensor;
pub mod weights;

pub use backend::{BackendKind, BackendOptions};
pub use config::ViTMSNConfig;
pub use error::{Error, Result};
pub use loss::Labels;
pub use model::{ForwardInput, ForwardOutput, ViTMSN};
pub use predict::{Embeddings, Feature, Prediction};
pub use tensor::Tensor;
pub use vitmsn_kernels::Isa;
