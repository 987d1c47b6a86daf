//! Images in: files decoded and turned into `pixel_values` exactly as transformers'
//! `ViTImageProcessor` (with Pillow) does for ViTMSN checkpoints.
//!
//! The pipeline, in transformers' order and arithmetic:
//!
//! 1. decode, recognising the format by content, and convert to 8-bit RGB as Pillow's
//!    `Image.open(f).convert("RGB")`: alpha is dropped (not composited), palette indices show
//!    their colours, CMYK uses Pillow's formula, 16-bit samples follow Pillow's raw modes;
//! 2. resize to `size` with Pillow's `Image.resize` and the configured filter, on 8-bit data;
//! 3. rescale: `(value as f64 * rescale_factor) as f32`;
//! 4. normalize in f32: `(value - mean as f32) / std as f32`;
//! 5. lay out channels first, `[C, H, W]`.
//!
//! When the resized bytes match Pillow's, the values are bit-identical to transformers'.
//!
//! EXIF orientation is not applied, because Pillow's `Image.open` does not apply it either: a
//! photo a camera stored sideways is fed to the model sideways, as transformers would.
//!
//! [`Preprocessor::with_crop`] switches to MSN's evaluation transform (torchvision's
//! `Resize(256)` + `CenterCrop(224)` for the 224x224 checkpoints) in place of the resize.
//!
//! Declared image sizes are read from the file header and checked against a pixel limit
//! before any pixel buffer is allocated, so a decompression bomb costs milliseconds.

mod decode;
mod resize;

use crate::error::{io_error, Error, Result};
use crate::tensor::Tensor;
pub use image::DynamicImage;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Pillow's resampling filters; the discriminants are PIL's codes, as
/// `preprocessor_config.json` writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resample {
    /// Pillow's `NEAREST`.
    Nearest = 0,
    /// Pillow's `LANCZOS`.
    Lanczos = 1,
    /// Pillow's `BILINEAR`.
    Bilinear = 2,
    /// Pillow's `BICUBIC`, ViTImageProcessor's default.
    Bicubic = 3,
    /// Pillow's `BOX`.
    Box = 4,
    /// Pillow's `HAMMING`.
    Hamming = 5,
}

impl Resample {
    /// Every filter, by Pillow code.
    pub const ALL: [Resample; 6] = [
        Resample::Nearest,
        Resample::Lanczos,
        Resample::Bilinear,
        Resample::Bicubic,
        Resample::Box,
        Resample::Hamming,
    ];

    /// The filter with PIL's code `code`.
    pub fn from_pil_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as i64 == code)
    }

    /// Lower-case name, as PIL's `Resampling` members are spelled.
    pub fn name(self) -> &'static str {
        match self {
            Resample::Nearest => "nearest",
            Resample::Lanczos => "lanczos",
            Resample::Bilinear => "bilinear",
            Resample::Bicubic => "bicubic",
            Resample::Box => "box",
            Resample::Hamming => "hamming",
        }
    }

    /// The filter named `name` (any case).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(name))
    }
}

/// The fields of transformers' `ViTImageProcessor` that change `pixel_values`.
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessorConfig {
    /// Whether images are resized to `size`.
    pub do_resize: bool,
    /// `(height, width)`.
    pub size: (usize, usize),
    /// The resampling filter of the resize.
    pub resample: Resample,
    /// Whether 0–255 values are multiplied by `rescale_factor`.
    pub do_rescale: bool,
    /// The rescale multiplier (1/255 by default).
    pub rescale_factor: f64,
    /// Whether channels are normalised by `image_mean` and `image_std`.
    pub do_normalize: bool,
    /// Per-channel mean subtracted when normalising.
    pub image_mean: Vec<f64>,
    /// Per-channel standard deviation divided by when normalising.
    pub image_std: Vec<f64>,
    /// Read and kept for completeness: images are always converted to RGB, since the model
    /// takes three channels and transformers' pipeline fails on anything else.
    pub do_convert_rgb: Option<bool>,
}

impl Default for PreprocessorConfig {
    /// The facebook/vit-msn-* checkpoints' `preprocessor_config.json`.
    fn default() -> Self {
        Self {
            do_resize: true,
            size: (224, 224),
            resample: Resample::Bilinear,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: vec![0.485, 0.456, 0.406],
            image_std: vec![0.229, 0.224, 0.225],
            do_convert_rgb: None,
        }
    }
}

/// `preprocessor_config.json` as written, every field optional.
#[derive(Deserialize)]
struct RawConfig {
    do_resize: Option<bool>,
    size: Option<RawSize>,
    resample: Option<i64>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    image_mean: Option<PerChannel>,
    image_std: Option<PerChannel>,
    do_convert_rgb: Option<bool>,
}

/// The spellings of `size` that transformers' `get_size_dict` accepts.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Square(usize),
    Pair([usize; 2]),
    Dict(BTreeMap<String, usize>),
}

/// A mean or std: one value for every channel, or one per channel.
#[derive(Deserialize)]
#[serde(untagged)]
enum PerChannel {
    All(f64),
    Each(Vec<f64>),
}

impl PerChannel {
    fn values(self) -> Vec<f64> {
        match self {
            PerChannel::All(v) => vec![v; 3],
            PerChannel::Each(v) => v,
        }
    }
}

impl RawSize {
    fn height_width(self) -> Result<(usize, usize)> {
        match self {
            RawSize::Square(s) => Ok((s, s)),
            RawSize::Pair([h, w]) => Ok((h, w)),
            RawSize::Dict(d) => {
                let keys: Vec<&str> = d.keys().map(String::as_str).collect();
                match (d.get("height"), d.get("width"), keys.len()) {
                    (Some(&h), Some(&w), 2) => Ok((h, w)),
                    _ => Err(Error::Config(format!(
                        "preprocessor_config.json size has keys {keys:?}; ViTImageProcessor \
                         resizes to {{\"height\", \"width\"}} and rejects other size dicts"
                    ))),
                }
            }
        }
    }
}

impl PreprocessorConfig {
    /// `preprocessor_config.json` in `dir` when present; else the facebook/vit-msn-*
    /// checkpoints' values with `size` set to the model's `(height, width)` (224x224 for
    /// those checkpoints), so that a model trained at another size still gets its own.
    pub fn from_dir(dir: &Path, model_size: (usize, usize)) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        // Present but not a regular file (a FIFO, a folder) is an error, not an absence.
        if std::fs::symlink_metadata(&path).is_err() {
            return Ok(Self {
                size: model_size,
                ..Self::default()
            });
        }
        let text = crate::files::read_json_text(&path)?;
        Self::from_json(&text)
    }

    /// Parses a `preprocessor_config.json`. A missing field takes `ViTImageProcessor`'s own
    /// default (mean and std 0.5, not ImageNet's), as `from_pretrained` would; unknown keys are
    /// ignored.
    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("preprocessor_config.json: {e}")))?;
        let resample = match raw.resample {
            None => Resample::Bilinear,
            Some(code) => Resample::from_pil_code(code).ok_or_else(|| {
                Error::Config(format!(
                    "preprocessor_config.json resample {code} is not a PIL filter code (0-5)"
                ))
            })?,
        };
        Ok(Self {
            do_resize: raw.do_resize.unwrap_or(true),
            size: raw.size.map_or(Ok((224, 224)), RawSize::height_width)?,
            resample,
            do_rescale: raw.do_rescale.unwrap_or(true),
            rescale_factor: raw.rescale_factor.unwrap_or(1.0 / 255.0),
            do_normalize: raw.do_normalize.unwrap_or(true),
            image_mean: raw.image_mean.map_or(vec![0.5; 3], PerChannel::values),
            image_std: raw.image_std.map_or(vec![0.5; 3], PerChannel::values),
            do_convert_rgb: raw.do_convert_rgb,
        })
    }
}

/// An 8-bit RGB image, rows top to bottom, pixels interleaved.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// The longest side of the images preprocessing makes (the config's `size`): ViTs are fed
/// at most 1024 or so. Resizing a small image to a 1x100,000,000 `size` took 46 s and
/// 7.7 GB, within the input pixel limit.
pub const MAX_OUTPUT_SIDE: usize = 8192;

/// The pixel limit [`Preprocessor::with_max_pixels`] starts from.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// An RGB image's `[3, H, W]` values as a tensor.
fn chw((height, width): (usize, usize), values: Vec<f32>) -> Tensor {
    Tensor::new(vec![3, height, width], values)
}

/// Turns images into `pixel_values` for one model.
#[derive(Clone, Debug)]
pub struct Preprocessor {
    config: PreprocessorConfig,
    crop: bool,
    max_pixels: u64,
}

/// What `from_bytes` calls its input in errors.
const BYTES_NAME: &str = "image data";

impl Preprocessor {
    /// Checks `config` against a model with `num_channels` input channels.
    pub fn new(config: PreprocessorConfig, num_channels: usize) -> Result<Self> {
        if num_channels != 3 {
            return Err(Error::Config(format!(
                "images are RGB but the model takes {num_channels} channels"
            )));
        }
        for (name, values) in [
            ("image_mean", &config.image_mean),
            ("image_std", &config.image_std),
        ] {
            if values.len() != num_channels {
                return Err(Error::Config(format!(
                    "{name} has {} values for {num_channels} channels",
                    values.len()
                )));
            }
        }
        let (height, width) = config.size;
        if height.max(width) > MAX_OUTPUT_SIDE {
            return Err(Error::Config(format!(
                "preprocessor size {height}x{width} is over the limit of {MAX_OUTPUT_SIDE} pixels a side"
            )));
        }
        if config.do_resize && (config.size.0 == 0 || config.size.1 == 0) {
            return Err(Error::Config(format!(
                "preprocessor size {}x{} has no pixels",
                config.size.0, config.size.1
            )));
        }
        Ok(Self {
            config,
            crop: false,
            max_pixels: DEFAULT_MAX_PIXELS,
        })
    }

    /// MSN's evaluation transform in place of the resize: the shorter side resized to 256
    /// (the same filter), then a centre crop of 224, with torchvision's rounding. For a
    /// configured size other than 224x224 the crop is that size and the shorter side goes to
    /// `max(height, width) * 256 / 224`, so the crop always fits.
    pub fn with_crop(self, crop: bool) -> Self {
        Self { crop, ..self }
    }

    /// Refuses images with more pixels than this (default 100,000,000), before decoding them.
    pub fn with_max_pixels(self, max_pixels: u64) -> Self {
        Self { max_pixels, ..self }
    }

    /// The preprocessing settings.
    pub fn config(&self) -> &PreprocessorConfig {
        &self.config
    }

    /// `(height, width)` every image comes out at; `None` when images keep their own size.
    pub fn output_size(&self) -> Option<(usize, usize)> {
        (self.crop || self.config.do_resize).then_some(self.config.size)
    }

    /// `[C, H, W]` values of the image file at `path`, whatever its extension says.
    pub fn load(&self, path: &Path) -> Result<Tensor> {
        let (hw, values) = self.load_sized(path)?;
        Ok(chw(hw, values))
    }

    /// `[C, H, W]` values of an encoded image (JPEG, PNG, WebP, BMP, GIF or TIFF).
    pub fn from_bytes(&self, bytes: &[u8]) -> Result<Tensor> {
        let rgb = decode::decode(bytes, BYTES_NAME, self.max_pixels)?;
        let (hw, values) = self.process(rgb, BYTES_NAME)?;
        Ok(chw(hw, values))
    }

    /// `[C, H, W]` values of an already decoded image, converted to RGB as Pillow would.
    pub fn from_image(&self, image: &DynamicImage) -> Result<Tensor> {
        self.check_pixels("image", image.width() as usize, image.height() as usize)?;
        let (hw, values) = self.process(decode::to_rgb(image), "image")?;
        Ok(chw(hw, values))
    }

    /// `[C, H, W]` values of interleaved 8-bit RGB pixels, rows top to bottom.
    pub fn from_rgb8(&self, width: usize, height: usize, rgb: &[u8]) -> Result<Tensor> {
        self.check_pixels("RGB buffer", width, height)?;
        if Some(rgb.len()) != width.checked_mul(height).and_then(|n| n.checked_mul(3)) {
            return Err(Error::Image(format!(
                "RGB buffer: {} bytes for {width}x{height} pixels; expected {}",
                rgb.len(),
                width.saturating_mul(height).saturating_mul(3)
            )));
        }
        let image = Rgb8 {
            width,
            height,
            data: rgb.to_vec(),
        };
        let (hw, values) = self.process(image, "RGB buffer")?;
        Ok(chw(hw, values))
    }

    /// `[N, C, H, W]` values of the image files; they must all come out the same size.
    pub fn batch<P: AsRef<Path>>(&self, paths: &[P]) -> Result<Tensor> {
        let Some(first) = paths.first() else {
            return Err(Error::Image("no images to batch".into()));
        };
        let mut data = Vec::new();
        let mut size = None;
        for path in paths {
            let path = path.as_ref();
            let (hw, values) = self.load_sized(path)?;
            match size {
                None => size = Some(hw),
                Some(expected) if expected != hw => {
                    return Err(Error::Image(format!(
                        "{}: comes out {}x{} but {} comes out {}x{}; a batch needs one size \
                         (set do_resize or use --crop)",
                        path.display(),
                        hw.0,
                        hw.1,
                        first.as_ref().display(),
                        expected.0,
                        expected.1
                    )))
                }
                Some(_) => {}
            }
            data.extend(values);
        }
        let (h, w) = size.unwrap_or_default();
        Ok(Tensor::new(vec![paths.len(), 3, h, w], data))
    }

    fn load_sized(&self, path: &Path) -> Result<((usize, usize), Vec<f32>)> {
        let bytes = self.read_image_file(path)?;
        let rgb = decode::decode(&bytes, &path.display().to_string(), self.max_pixels)?;
        self.process(rgb, &path.display().to_string())
    }

    /// The bytes of an image file: a regular file (a FIFO named `photo.jpg` would block the
    /// read), no larger than an image within the pixel limit can be, uncompressed at 16
    /// bytes a pixel (RGBA of 32-bit floats) and 1 MiB of metadata.
    fn read_image_file(&self, path: &Path) -> Result<Vec<u8>> {
        let file = crate::files::open_regular(path)?;
        let limit = self.max_pixels.saturating_mul(16).saturating_add(1 << 20);
        let len = file.metadata().map_err(io_error(path))?.len();
        if len > limit {
            return Err(Error::Image(format!(
                "{}: {len} bytes, more than an image of {} pixels can hold",
                path.display(),
                self.max_pixels
            )));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        std::io::Read::read_to_end(&mut std::io::Read::take(file, limit), &mut bytes)
            .map_err(io_error(path))?;
        Ok(bytes)
    }

    fn check_pixels(&self, name: &str, width: usize, height: usize) -> Result<()> {
        decode::check_pixels(width as u64, height as u64, self.max_pixels)
            .map_err(|why| Error::Image(format!("{name}: {why}")))
    }

    /// Resize (or crop) then rescale and normalize; returns `(height, width)` and `[C, H, W]`.
    /// `name` names the image in errors.
    fn process(&self, image: Rgb8, name: &str) -> Result<((usize, usize), Vec<f32>)> {
        let (height, width) = self.config.size;
        let image = if self.crop {
            self.crop(&image, name)?
        } else if self.config.do_resize {
            resize::resize(&image, width, height, self.config.resample)
        } else {
            image
        };
        Ok(((image.height, image.width), self.normalize(&image)))
    }

    /// torchvision's `Resize(short)` then `CenterCrop(size)` on the RGB image.
    /// A thin image would be stretched into a huge one before the crop, so that size is
    /// held to the pixel limit too.
    fn crop(&self, image: &Rgb8, name: &str) -> Result<Rgb8> {
        let (crop_h, crop_w) = self.config.size;
        if crop_h == 0 || crop_w == 0 {
            return Err(Error::Config(format!(
                "preprocessor size {crop_h}x{crop_w} has no pixels to crop to"
            )));
        }
        let short = crop_h.max(crop_w) * 256 / 224;
        let (w, h) = (image.width, image.height);
        // torchvision's `_compute_resized_output_size`: the longer side is truncated.
        let long_for = |long: usize, short_side: usize| (short * long) as f64 / short_side as f64;
        let (new_w, new_h) = if w <= h {
            (short, long_for(h, w) as usize)
        } else {
            (long_for(w, h) as usize, short)
        };
        if (new_w as u64).saturating_mul(new_h as u64) > self.max_pixels {
            return Err(Error::Image(format!(
                "{name}: --crop would first resize its {w}x{h} pixels to {new_w}x{new_h}, over the limit of {} pixels",
                self.max_pixels
            )));
        }
        let resized = resize::resize(image, new_w, new_h, self.config.resample);
        // torchvision's `center_crop` offsets: Python's round, ties to even.
        let offset = |from: usize, to: usize| ((from - to) as f64 / 2.0).round_ties_even() as usize;
        let (top, left) = (offset(new_h, crop_h), offset(new_w, crop_w));
        let data = resized
            .data
            .chunks_exact(new_w * 3)
            .skip(top)
            .take(crop_h)
            .flat_map(|row| &row[left * 3..(left + crop_w) * 3])
            .copied()
            .collect();
        Ok(Rgb8 {
            width: crop_w,
            height: crop_h,
            data,
        })
    }

    /// transformers' `rescale` (f64 product, cast to f32) and `normalize` (f32), channels first.
    fn normalize(&self, image: &Rgb8) -> Vec<f32> {
        let config = &self.config;
        let mut out = vec![0f32; image.data.len()];
        let plane = image.width * image.height;
        for channel in 0..3 {
            let mean = config.image_mean[channel] as f32;
            let std = config.image_std[channel] as f32;
            let samples = image.data.iter().skip(channel).step_by(3);
            for (dest, &v) in out[channel * plane..(channel + 1) * plane]
                .iter_mut()
                .zip(samples)
            {
                let mut x = if config.do_rescale {
                    (f64::from(v) * config.rescale_factor) as f32
                } else {
                    f32::from(v)
                };
                if config.do_normalize {
                    x = (x - mean) / std;
                }
                *dest = x;
            }
        }
        out
    }
}

/// Extensions `collect_images` takes from folders (compared without regard to case).
const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

/// Image files under the given paths: a file argument is taken as given; a folder is walked
/// recursively, files in sorted relative-path order, only image extensions (jpg jpeg png webp
/// bmp gif tif tiff, any case). Links to folders are not followed, so a link loop cannot
/// recurse forever.
pub fn collect_images<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<PathBuf>> {
    let mut images = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(io_error(path))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            found.sort();
            images.extend(found);
        } else {
            images.push(path.to_path_buf());
        }
    }
    Ok(images)
}

/// Appends the image files under `dir`; sorting the full paths sorts by relative path, since
/// they share the `dir` prefix.
fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io_error(&path))?;
        if kind.is_dir() {
            walk(&path, found)?;
        } else if (kind.is_file() || (kind.is_symlink() && path.is_file()))
            && has_image_extension(&path)
        {
            found.push(path);
        }
    }
    Ok(())
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}
