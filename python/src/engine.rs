//! Every call the binding makes into the `vitmsn` crate, in plain Rust types: the rest of
//! the binding converts between these and Python objects and never names the crate, so a
//! change of the crate's API is a change here alone.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use vitmsn::pipeline::{stack, ImageInput, Pipeline, Rgb8};
use vitmsn::preprocess::{Preprocessor, PreprocessorConfig};
use vitmsn::{BackendKind, Embeddings, Feature, ForwardInput, Precision, Tensor, ViTMSN};

/// A row-major f32 array with its shape.
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl From<Tensor> for Array {
    fn from(t: Tensor) -> Self {
        Self {
            shape: t.shape,
            data: t.data,
        }
    }
}

impl From<Array> for Tensor {
    fn from(a: Array) -> Self {
        Tensor::new(a.shape, a.data)
    }
}

/// One image to preprocess: a file, or interleaved RGB bytes row by row.
pub enum Image {
    File(PathBuf),
    Rgb {
        width: usize,
        height: usize,
        data: Vec<u8>,
    },
}

impl ImageInput for Image {
    fn pixels(&self, preprocessor: &Preprocessor) -> vitmsn::Result<Tensor> {
        match self {
            Image::File(path) => path.pixels(preprocessor),
            Image::Rgb {
                width,
                height,
                data,
            } => Rgb8 {
                width: *width,
                height: *height,
                data,
            }
            .pixels(preprocessor),
        }
    }
}

/// Labels for the loss: class indices, or float targets.
pub enum Labels {
    Classes(Vec<i64>),
    Values(Vec<f32>),
}

/// The inputs of one forward, as transformers' `forward` takes them.
pub struct ForwardRequest {
    pub pixel_values: Array,
    /// `[batch · patches]`, flattened.
    pub bool_masked_pos: Option<Vec<bool>>,
    pub head_mask: Option<Array>,
    pub labels: Option<Labels>,
    pub output_attentions: bool,
    pub output_hidden_states: bool,
    pub interpolate_pos_encoding: bool,
}

/// What a forward returns, under transformers' names.
pub struct ForwardResult {
    pub last_hidden_state: Option<Array>,
    pub logits: Option<Array>,
    pub loss: Option<f32>,
    pub hidden_states: Vec<Array>,
    pub attentions: Vec<Array>,
}

/// Which Python exception an engine error becomes.
#[derive(Clone, Copy)]
pub enum ErrorKind {
    /// Bad input, checkpoint or option: `ValueError`.
    Value,
    /// A file could not be read or written: `OSError`.
    Os,
    /// The backend failed: `RuntimeError`.
    Runtime,
}

#[derive(Clone)]
pub struct EngineError {
    pub kind: ErrorKind,
    pub message: String,
}

impl EngineError {
    fn value(message: String) -> Self {
        Self {
            kind: ErrorKind::Value,
            message,
        }
    }
}

impl From<vitmsn::Error> for EngineError {
    fn from(e: vitmsn::Error) -> Self {
        use vitmsn::ErrorKind as Class;
        let kind = match e.kind() {
            Class::Checkpoint | Class::Input | Class::InvalidOption => ErrorKind::Value,
            Class::Io => ErrorKind::Os,
            // The backend, or a class of error newer than this binding.
            _ => ErrorKind::Runtime,
        };
        Self {
            kind,
            message: e.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;

/// A loaded checkpoint with its preprocessing.
pub struct Engine {
    model: ViTMSN,
    /// The checkpoint's preprocessing, or why it has none (a model of other than three
    /// channels still runs `forward` on pixel values).
    preprocessor: std::result::Result<Preprocessor, EngineError>,
    is_classifier: bool,
    hidden_size: usize,
    image_size: (usize, usize),
    backend: &'static str,
    threads: usize,
    precision: &'static str,
}

impl Engine {
    /// Loads a `save_pretrained` folder on `backend` (`scalar`, `cpu` or `gpu`), with
    /// `threads` CPU threads (`cpu` only; `None`: `VITMSN_THREADS`, else every core) and
    /// `precision` (`f32`; `f16` on `gpu`; `bf16` or `int8` on `cpu`; `None`: `f32`, or
    /// `int8` for a checkpoint `vitmsn quantize` wrote). The engine refuses a precision
    /// the backend does not run.
    pub fn load(
        dir: &Path,
        backend: &str,
        threads: Option<usize>,
        precision: Option<&str>,
    ) -> Result<Self> {
        let kind = BackendKind::from_str(backend)?;
        let precision = precision.map(Precision::from_str).transpose()?;
        if threads.is_some() && kind != BackendKind::Cpu {
            return Err(EngineError::value(format!(
                "threads applies to the cpu backend, not {backend}"
            )));
        }
        if threads == Some(0) {
            return Err(EngineError::value("threads must be at least 1".into()));
        }
        let mut builder = ViTMSN::builder().backend(kind);
        if let Some(precision) = precision {
            builder = builder.precision(precision);
        }
        if let Some(threads) = threads {
            builder = builder.threads(threads);
        }
        let model = builder.load(dir)?;
        let config = model.config();
        let preprocessing = PreprocessorConfig::from_dir(dir, config.image_size.hw())?;
        let preprocessor =
            Preprocessor::new(preprocessing, config.num_channels).map_err(EngineError::from);
        Ok(Self {
            is_classifier: model.is_classifier(),
            hidden_size: config.hidden_size,
            image_size: config.image_size.hw(),
            backend: model.backend_name(),
            threads: model.backend_threads(),
            precision: model.precision().name(),
            model,
            preprocessor,
        })
    }

    pub fn is_classifier(&self) -> bool {
        self.is_classifier
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// `(height, width)` of the images the checkpoint was trained on.
    pub fn image_size(&self) -> (usize, usize) {
        self.image_size
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The CPU backend's threads (1 on the others).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The precision the weights and products run in, by name (`f32`, `f16`, `bf16`,
    /// `int8`).
    pub fn precision(&self) -> &'static str {
        self.precision
    }

    pub fn forward(&self, request: ForwardRequest) -> Result<ForwardResult> {
        let input = ForwardInput {
            pixel_values: request.pixel_values.into(),
            bool_masked_pos: request.bool_masked_pos,
            head_mask: request.head_mask.map(Tensor::from),
            labels: request.labels.map(|labels| match labels {
                Labels::Classes(c) => vitmsn::Labels::Classes(c),
                Labels::Values(v) => vitmsn::Labels::Values(v),
            }),
            output_attentions: request.output_attentions,
            output_hidden_states: request.output_hidden_states,
            interpolate_pos_encoding: request.interpolate_pos_encoding,
        };
        let out = self.model.forward(&input)?;
        Ok(ForwardResult {
            last_hidden_state: out.last_hidden_state.map(Array::from),
            logits: out.logits.map(Array::from),
            loss: out.loss,
            hidden_states: out.hidden_states.into_iter().map(Array::from).collect(),
            attentions: out.attentions.into_iter().map(Array::from).collect(),
        })
    }

    /// The images as the `pixel_values` `[N, C, H, W]` the model is fed.
    pub fn preprocess(&self, images: &[Image]) -> Result<Array> {
        Ok(self.pixels(images)?.into())
    }

    fn pixels(&self, images: &[Image]) -> Result<Tensor> {
        let preprocessor = self.preprocessor.as_ref().map_err(Clone::clone)?;
        let pixels = images
            .iter()
            .map(|image| image.pixels(preprocessor))
            .collect::<vitmsn::Result<Vec<_>>>()?;
        Ok(stack(&pixels)?)
    }

    /// Each of `features` (by name: `cls`, `cls_prenorm`, `mean`) under the name `vitmsn
    /// embed` writes it, `[N, hidden]`, from images (in batches, each preprocessed outside
    /// the model's lock) or from `pixel_values`.
    pub fn embed(&self, input: Batch, features: &[String]) -> Result<Vec<(String, Array)>> {
        let features = features
            .iter()
            .map(|name| Feature::from_str(name))
            .collect::<vitmsn::Result<Vec<_>>>()?;
        let mut embeddings = Embeddings::default();
        match input {
            Batch::Images(images) => {
                for batch in images.chunks(Pipeline::DEFAULT_BATCH_SIZE) {
                    let pixels = self.pixels(batch)?;
                    embeddings.append(self.model.embed(pixels, &features)?);
                }
            }
            Batch::Pixels(pixels) => embeddings = self.model.embed(pixels.into(), &features)?,
        }
        Ok(embeddings
            .features
            .into_iter()
            .map(|(feature, tensor)| (feature.tensor_name().to_string(), tensor.into()))
            .collect())
    }

    /// The `top_k` most probable `(label, probability)` of each image, most probable first.
    pub fn classify(&self, input: Batch, top_k: usize) -> Result<Vec<Vec<(String, f32)>>> {
        let mut predictions = Vec::new();
        match input {
            Batch::Images(images) => {
                for batch in images.chunks(Pipeline::DEFAULT_BATCH_SIZE) {
                    let pixels = self.pixels(batch)?;
                    predictions.extend(self.model.classify(pixels, top_k)?);
                }
            }
            Batch::Pixels(pixels) => predictions = self.model.classify(pixels.into(), top_k)?,
        }
        Ok(predictions
            .into_iter()
            .map(|image| {
                image
                    .into_iter()
                    .map(|p| (p.label, p.probability))
                    .collect()
            })
            .collect())
    }
}

/// What `embed` and `classify` take: images, or `pixel_values` `[N, C, H, W]` run as one
/// batch.
pub enum Batch {
    Images(Vec<Image>),
    Pixels(Array),
}

/// The image files under `paths`, as the command line walks them: files as given, folders
/// recursively in sorted order, image extensions only.
pub fn collect_images(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    Ok(vitmsn::preprocess::collect_images(paths)?)
}
