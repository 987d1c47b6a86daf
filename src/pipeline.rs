//! Images in, answers out: a loaded model with its checkpoint's preprocessing.
//!
//! Load a `save_pretrained` folder once, then embed or classify images given as paths,
//! decoded [`image::DynamicImage`]s or raw [`Rgb8`] buffers (the examples use a tiny
//! test checkpoint with random weights; point them at facebook/vit-msn-small for real use):
//!
//! ```
//! use vitmsn::pipeline::{Pipeline, Rgb8};
//! use vitmsn::{BackendKind, BackendOptions, Feature};
//!
//! let pipeline = Pipeline::from_dir(
//!     "tests/fixtures/base_all_outputs/model",
//!     BackendKind::default_for_this_cpu(),
//!     &BackendOptions::default(),
//! )?;
//! // The pixel_values the model is fed, [N, C, H, W].
//! let pixels = pipeline.preprocess(&["samples/query/cat/cat-1.jpg"])?;
//! assert_eq!(pixels.shape, [1, 3, 32, 32]);
//!
//! // Embeddings from files, one [N, hidden] tensor per feature asked for.
//! let files = ["samples/query/cat/cat-1.jpg", "samples/query/rocket/rocket-1.jpg"];
//! let embeddings = pipeline.embed(&files, &[Feature::Cls, Feature::ClsPrenorm])?;
//! assert_eq!(embeddings.get(Feature::Cls).unwrap().shape, [2, 32]);
//!
//! // The same from decoded images, or from raw RGB bytes. (vitmsn decodes JPEG itself with
//! // libjpeg-turbo's code; to decode JPEGs with the `image` crate, enable its `jpeg` feature.)
//! let decoded = image::open("tests/fixtures/images/coffee_rgb_120x80.png").unwrap();
//! let from_decoded = pipeline.embed(&[&decoded], &[Feature::Cls])?;
//! let rgb = decoded.to_rgb8();
//! let raw = Rgb8 { width: rgb.width() as usize, height: rgb.height() as usize, data: rgb.as_raw() };
//! let from_raw = pipeline.embed(&[raw], &[Feature::Cls])?;
//! assert_eq!(from_decoded.get(Feature::Cls), from_raw.get(Feature::Cls));
//! # Ok::<(), vitmsn::Error>(())
//! ```
//!
//! A classifier checkpoint answers with labels from its `id2label`:
//!
//! ```
//! use vitmsn::pipeline::Pipeline;
//! use vitmsn::{BackendKind, BackendOptions};
//!
//! let pipeline = Pipeline::from_dir(
//!     "tests/fixtures/classifier_ce/model",
//!     BackendKind::Scalar,
//!     &BackendOptions::default(),
//! )?;
//! let top = pipeline.classify(&["samples/query/cat/cat-1.jpg"], 2)?;
//! for prediction in &top[0] {
//!     println!("{} {:.3}", prediction.label, prediction.probability);
//! }
//! assert!(top[0][0].probability >= top[0][1].probability);
//! # Ok::<(), vitmsn::Error>(())
//! ```

use crate::backend::{BackendKind, BackendOptions};
use crate::error::{Error, Result};
use crate::model::ViTMSN;
use crate::predict::{Embeddings, Feature, Prediction};
use crate::preprocess::{Preprocessor, PreprocessorConfig};
use crate::tensor::Tensor;
use std::path::{Path, PathBuf};

/// Something the preprocessor turns into one image's pixels `[channels, height, width]`:
/// a file path, a decoded [`image::DynamicImage`], or an [`Rgb8`] buffer.
pub trait ImageInput {
    /// The preprocessed pixels `[channels, height, width]`.
    fn pixels(&self, preprocessor: &Preprocessor) -> Result<Tensor>;
}

impl ImageInput for Path {
    fn pixels(&self, preprocessor: &Preprocessor) -> Result<Tensor> {
        preprocessor.load(self)
    }
}

impl ImageInput for PathBuf {
    fn pixels(&self, preprocessor: &Preprocessor) -> Result<Tensor> {
        preprocessor.load(self)
    }
}

impl ImageInput for str {
    fn pixels(&self, preprocessor: &Preprocessor) -> Result<Tensor> {
        preprocessor.load(Path::new(self))
    }
}

impl ImageInput for String {
    fn pixels(&self, preprocessor: &Preprocessor) -> Result<Tensor> {
        preprocessor.load(Path::new(self))
    }
}

impl ImageInput for image::DynamicImage {
    fn pixels(&self, preprocessor: &Preprocessor) -> Result<Tensor> {
        preprocessor.from_image(self)
    }
}

/// Raw interleaved RGB bytes, row by row, `width · height · 3` of them.
#[derive(Clone, Copy, Debug)]
pub struct Rgb8<'a> {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width * height` RGB triples, row by row.
    pub data: &'a [u8],
}

impl ImageInput for Rgb8<'_> {
    fn pixels(&self, preprocessor: &Preprocessor) -> Result<Tensor> {
        preprocessor.from_rgb8(self.width, self.height, self.data)
    }
}

impl<T: ImageInput + ?Sized> ImageInput for &T {
    fn pixels(&self, preprocessor: &Preprocessor) -> Result<Tensor> {
        (**self).pixels(preprocessor)
    }
}

/// A model and its preprocessing, run over images in batches.
pub struct Pipeline {
    model: ViTMSN,
    preprocessor: Preprocessor,
    batch_size: usize,
}

impl Pipeline {
    /// Images per forward unless [`with_batch_size`](Self::with_batch_size) says otherwise.
    pub const DEFAULT_BATCH_SIZE: usize = 8;

    /// Loads a `save_pretrained` folder: the model, and the preprocessing its
    /// `preprocessor_config.json` describes (the facebook/vit-msn-* one at the model's image
    /// size when absent).
    pub fn from_dir(
        dir: impl AsRef<Path>,
        backend: BackendKind,
        options: &BackendOptions,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let model = ViTMSN::from_dir(dir, backend, options)?;
        let config = model.config();
        let preprocessor = Preprocessor::new(
            PreprocessorConfig::from_dir(dir, config.image_size.hw())?,
            config.num_channels,
        )?;
        Ok(Self::new(model, preprocessor))
    }

    /// A pipeline of a loaded model and a preprocessing.
    pub fn new(model: ViTMSN, preprocessor: Preprocessor) -> Self {
        Self {
            model,
            preprocessor,
            batch_size: Self::DEFAULT_BATCH_SIZE,
        }
    }

    /// Images per forward (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The model.
    pub fn model(&self) -> &ViTMSN {
        &self.model
    }

    /// The preprocessing.
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// The images as the `pixel_values` `[N, C, H, W]` the model is fed.
    pub fn preprocess<I: ImageInput>(&self, images: &[I]) -> Result<Tensor> {
        stack(
            &images
                .iter()
                .map(|i| i.pixels(&self.preprocessor))
                .collect::<Result<Vec<_>>>()?,
        )
    }

    /// The backbone's `features` of each image, `[N, hidden]` each.
    pub fn embed<I: ImageInput>(&self, images: &[I], features: &[Feature]) -> Result<Embeddings> {
        let mut all = Embeddings::default();
        for batch in images.chunks(self.batch_size) {
            let pixels = self.preprocess(batch)?;
            all.append(self.model.embed(pixels, features)?);
        }
        Ok(all)
    }

    /// The `top_k` most probable labels of each image, most probable first.
    pub fn classify<I: ImageInput>(
        &self,
        images: &[I],
        top_k: usize,
    ) -> Result<Vec<Vec<Prediction>>> {
        let mut all = Vec::with_capacity(images.len());
        for batch in images.chunks(self.batch_size) {
            let pixels = self.preprocess(batch)?;
            all.extend(self.model.classify(pixels, top_k)?);
        }
        Ok(all)
    }
}

/// Stacks images' `[C, H, W]` pixels into `[N, C, H, W]`; they must share a size, which
/// they do whenever the preprocessing resizes.
pub fn stack(images: &[Tensor]) -> Result<Tensor> {
    let Some(first) = images.first() else {
        return Err(Error::Input("no images to stack".into()));
    };
    if let Some(other) = images.iter().find(|i| i.shape != first.shape) {
        return Err(Error::Input(format!(
            "images of sizes {:?} and {:?} cannot share a batch (the preprocessing does not resize: do_resize is false)",
            first.shape, other.shape
        )));
    }
    let mut shape = vec![images.len()];
    shape.extend(&first.shape);
    let data = images.iter().flat_map(|i| i.data.iter().copied()).collect();
    Ok(Tensor::new(shape, data))
}
