//! vitmsn: an inference engine for ViTMSN (Masked Siamese Networks, Assran et al. 2022),
//! computing exactly what transformers' `ViTMSNModel` and `ViTMSNForImageClassification`
//! compute, on hand-written CPU kernels (AVX-512, AVX2/FMA, NEON) or WGSL shaders.
//!
//! Load a `save_pretrained` directory, then run forwards: one loaded [`ViTMSN`] is
//! `Send + Sync` and its forwards take `&self`, so threads can share it.
//!
//! ```no_run
//! use vitmsn::{ForwardInput, Tensor, ViTMSN};
//! let model = ViTMSN::builder().load("path/to/vit-msn-small")?;
//! let pixels = Tensor::try_new(vec![1, 3, 224, 224], vec![0.0; 3 * 224 * 224])?;
//! let out = model.forward(&ForwardInput { pixel_values: pixels, ..Default::default() })?;
//! let last_hidden_state = out.last_hidden_state.expect("a bare model's output");
//! assert_eq!(last_hidden_state.shape, [1, 197, 384]);
//! # Ok::<(), vitmsn::Error>(())
//! ```
//!
//! From image files to embeddings and labels, [`pipeline::Pipeline`] adds transformers'
//! `ViTImageProcessor`; [`fewshot`] learns classes from a few labelled images.

#![warn(missing_docs)]

mod backend;
// Internals: reachable only through the hidden `internals` module.
#[allow(missing_docs)]
mod bench;
pub mod config;
mod error;
mod executor;
pub mod fewshot;
mod files;
// Internals: reachable only through the hidden `internals` module.
#[allow(missing_docs)]
mod graph;
mod interpolate;
mod io;
mod loss;
mod model;
pub mod pipeline;
// Internals: reachable only through the hidden `internals` module.
#[allow(missing_docs)]
mod plan;
mod predict;
pub mod preprocess;
mod quantize;
// Internals: reachable only through the hidden `internals` module.
#[allow(missing_docs)]
mod safetensors_file;
mod tensor;
mod weights;

pub use backend::{BackendKind, BackendOptions, Device, Precision};
pub use config::ViTMSNConfig;
pub use error::{Error, ErrorKind, Result};
pub use executor::OpTime;
pub use loss::Labels;
pub use model::{ForwardInput, ForwardOutput, InputSpec, ViTMSN, ViTMSNBuilder};
pub use predict::{Embeddings, Feature, Prediction};
pub use tensor::Tensor;
pub use vitmsn_kernels::{Activation, Isa};
pub use weights::Weights;

/// The engine's inner parts, public for vitmsn's own command-line tool, tests, benches
/// and examples: backends, graphs, tensor files, benchmarks. They may change in any
/// release.
#[doc(hidden)]
pub mod internals {
    /// Backends by kind, and their option checks.
    pub mod backend {
        pub use crate::backend::{
            check_threads, create, max_threads, memory, parse_isa, Backend, Workspace,
        };
    }
    /// `vitmsn bench`.
    pub mod bench {
        pub use crate::bench::*;
    }
    /// The graph a forward runs.
    pub mod graph {
        pub use crate::graph::{ConstData, ConstRole, Constant, Graph, Op};
    }
    /// Forward inputs and outputs as safetensors files.
    pub mod io {
        pub use crate::io::*;
    }
    /// Slot assignment of a graph.
    pub mod plan {
        pub use crate::plan::{Plan, Slot};
    }
    /// `vitmsn quantize`: int8 checkpoints.
    pub mod quantize {
        pub use crate::quantize::*;
    }
    /// The safetensors reader.
    pub mod safetensors_file {
        pub use crate::safetensors_file::*;
    }
    /// Checkpoint files.
    pub mod weights {
        pub use crate::weights::*;
    }
}
