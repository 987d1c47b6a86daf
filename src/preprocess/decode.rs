//! Bytes to 8-bit RGB as Pillow's `Image.open(f).convert("RGB")` gives them.
//!
//! The format is recognised from the content. The declared size is read from the header and
//! checked against the pixel limit before any pixel buffer exists. JPEG is decoded by libjpeg-turbo's
//! C code (through the `mozjpeg` crate) as Pillow decodes it, so its pixels are Pillow's bit for
//! bit. Where the `image` crate's conversion to 8-bit RGB differs from Pillow's, the samples are
//! converted here instead: 16-bit samples keep their high byte (Pillow's `;16B` raw modes) except
//! 16-bit gray, which Pillow opens as `I;16` and clips at 255; CMYK uses Pillow's `cmyk2rgb`; a
//! GIF's first frame is read as palette indices so that a transparent index still shows its
//! palette colour.

use super::Rgb8;
use crate::error::{Error, Result};
use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use std::cell::Cell;
use std::io::{BufRead, Cursor, Read};

/// Decodes `bytes` (named `name` in errors) to RGB, refusing more than `max_pixels` pixels.
pub(crate) fn decode(bytes: &[u8], name: &str, max_pixels: u64) -> Result<Rgb8> {
    let fail = |why: String| Error::Image(format!("{name}: {why}"));
    if bytes.is_empty() {
        return Err(fail("empty file, not an image".into()));
    }
    let format = image::guess_format(bytes)
        .map_err(|_| fail("not an image (unrecognised content)".into()))?;
    match format {
        ImageFormat::Gif => decode_gif(bytes, max_pixels).map_err(fail),
        ImageFormat::Jpeg => decode_jpeg(bytes, max_pixels).map_err(fail),
        ImageFormat::Tiff if is_cmyk_tiff(bytes) => {
            decode_cmyk_tiff(bytes, max_pixels).map_err(fail)
        }
        ImageFormat::Png | ImageFormat::WebP | ImageFormat::Bmp | ImageFormat::Tiff => {
            decode_with_image(bytes, format, max_pixels).map_err(fail)
        }
        other => Err(fail(format!(
            "{} images are not supported (JPEG, PNG, WebP, BMP, GIF, TIFF are)",
            other
                .extensions_str()
                .first()
                .unwrap_or(&"this kind of")
                .to_uppercase()
        ))),
    }
}

/// Errors when `width` x `height` is over the limit; the message gives both.
pub(crate) fn check_pixels(width: u64, height: u64, max_pixels: u64) -> Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("{width}x{height} image has no pixels"));
    }
    if width.saturating_mul(height) > max_pixels {
        return Err(format!(
            "{width}x{height} is over the {max_pixels}-pixel limit"
        ));
    }
    Ok(())
}

/// The `image` crate's limits for an image of at most `max_pixels` pixels: no side longer, and
/// no more memory than its largest pixel layout (4 channels of 16 bits) needs.
fn limits(max_pixels: u64) -> Limits {
    let side = u32::try_from(max_pixels).unwrap_or(u32::MAX);
    let mut limits = Limits::default();
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(1 << 20));
    limits
}

fn decode_with_image(bytes: &[u8], format: ImageFormat, max_pixels: u64) -> Result<Rgb8, String> {
    let reader = |bytes| {
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        reader.limits(limits(max_pixels));
        reader
    };
    let (width, height) = reader(bytes).into_dimensions().map_err(describe)?;
    check_pixels(width.into(), height.into(), max_pixels)?;
    let image = reader(bytes).decode().map_err(describe)?;
    Ok(to_rgb(&image))
}

/// An `image` error as a reason: a short stream is called truncated.
fn describe(err: image::ImageError) -> String {
    let text = err.to_string();
    let truncated = match &err {
        image::ImageError::IoError(e) => e.kind() == std::io::ErrorKind::UnexpectedEof,
        _ => {
            let lower = text.to_lowercase();
            lower.contains("eof") || lower.contains("end of") || lower.contains("truncat")
        }
    };
    if truncated {
        format!("truncated or corrupt image ({text})")
    } else {
        format!("cannot decode ({text})")
    }
}

/// Pillow's `convert("RGB")` of what the `image` crate decoded.
pub(crate) fn to_rgb(image: &DynamicImage) -> Rgb8 {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let data = match image {
        DynamicImage::ImageRgb8(im) => im.as_raw().clone(),
        DynamicImage::ImageRgba8(im) => rgb_of(im.as_raw(), 4, |v| v),
        DynamicImage::ImageLuma8(im) => gray_of(im.as_raw(), 1, |v| v),
        DynamicImage::ImageLumaA8(im) => gray_of(im.as_raw(), 2, |v| v),
        // Pillow reads 16-bit gray as `I;16`; its conversion to 8 bits clips.
        DynamicImage::ImageLuma16(im) => gray_of(im.as_raw(), 1, |v| v.min(255) as u8),
        DynamicImage::ImageLumaA16(im) => gray_of(im.as_raw(), 2, high_byte),
        DynamicImage::ImageRgb16(im) => rgb_of(im.as_raw(), 3, high_byte),
        DynamicImage::ImageRgba16(im) => rgb_of(im.as_raw(), 4, high_byte),
        // Float images (which Pillow does not open as RGB): the `image` crate's conversion.
        other => other.to_rgb8().into_raw(),
    };
    Rgb8 {
        width,
        height,
        data,
    }
}

fn high_byte(v: u16) -> u8 {
    (v >> 8) as u8
}

fn rgb_of<T: Copy>(samples: &[T], channels: usize, to_u8: impl Fn(T) -> u8) -> Vec<u8> {
    samples
        .chunks_exact(channels)
        .flat_map(|p| [to_u8(p[0]), to_u8(p[1]), to_u8(p[2])])
        .collect()
}

fn gray_of<T: Copy>(samples: &[T], channels: usize, to_u8: impl Fn(T) -> u8) -> Vec<u8> {
    samples
        .chunks_exact(channels)
        .flat_map(|p| [to_u8(p[0]); 3])
        .collect()
}

/// A JPEG as Pillow's `Image.open(f).convert("RGB")`: libjpeg's default decoding (the accurate
/// integer IDCT, smooth chroma upsampling) to RGB, or for a four-channel JPEG to CMYK, which
/// Pillow takes as Adobe's inverted CMYK and converts with `cmyk2rgb`. A stream that ends early
/// is refused, as Pillow refuses it ("image file is truncated"), where libjpeg would pad it.
fn decode_jpeg(bytes: &[u8], max_pixels: u64) -> Result<Rgb8, String> {
    let read_past_end = Cell::new(false);
    // The mozjpeg crate reports libjpeg's fatal errors by unwinding out of the C code (built
    // for it) with the message as payload; nothing is left half-updated that is used after.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_jpeg_unguarded(bytes, max_pixels, &read_past_end)
    }));
    let truncated = |why: &str| format!("truncated or corrupt image (JPEG data ends early: {why})");
    match decoded {
        Ok(Ok(_)) if read_past_end.get() => {
            Err(truncated("the data stops before the end-of-image marker"))
        }
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("libjpeg failed");
            let message = message.trim_start_matches("libjpeg fatal error: ");
            if read_past_end.get() {
                Err(truncated(message))
            } else {
                Err(format!("cannot decode ({message})"))
            }
        }
    }
}

fn decode_jpeg_unguarded(
    bytes: &[u8],
    max_pixels: u64,
    read_past_end: &Cell<bool>,
) -> Result<Rgb8, String> {
    let io_error = |e: std::io::Error| format!("cannot decode ({e})");
    let source = JpegSource {
        data: bytes,
        read_past_end,
    };
    // Reads the header only; nothing the size of the image is allocated before the check.
    let decompress = mozjpeg::Decompress::new_reader(source).map_err(io_error)?;
    let (width, height) = decompress.size();
    check_pixels(width as u64, height as u64, max_pixels)?;
    let data = if decompress.components().len() == 4 {
        let mut started = decompress
            .to_colorspace(mozjpeg::ColorSpace::JCS_CMYK)
            .map_err(io_error)?;
        let mut cmyk: Vec<u8> = started.read_scanlines().map_err(io_error)?;
        started.finish().map_err(io_error)?;
        // Pillow's `CMYK;I` raw mode: Adobe writes CMYK inverted.
        cmyk.iter_mut().for_each(|v| *v = 255 - *v);
        cmyk_to_rgb(&cmyk)
    } else {
        let mut started = decompress.rgb().map_err(io_error)?;
        let rgb: Vec<u8> = started.read_scanlines().map_err(io_error)?;
        started.finish().map_err(io_error)?;
        rgb
    };
    if data.len() != width * height * 3 {
        return Err("truncated or corrupt image (short JPEG data)".into());
    }
    Ok(Rgb8 {
        width,
        height,
        data,
    })
}

/// The JPEG bytes for libjpeg, noting when it asks for more after the end: libjpeg then
/// pretends the stream ended properly and fills the rest of the image with gray.
struct JpegSource<'a> {
    data: &'a [u8],
    read_past_end: &'a Cell<bool>,
}

impl Read for JpegSource<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.read_past_end.set(true);
        }
        Ok(n)
    }
}

impl BufRead for JpegSource<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.data.is_empty() {
            self.read_past_end.set(true);
        }
        Ok(self.data)
    }

    fn consume(&mut self, n: usize) {
        self.data = &self.data[n.min(self.data.len())..];
    }
}

/// Pillow's `cmyk2rgb`: each channel is `(255 - k) - round(c * (255 - k) / 255)`.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let muldiv255 = |a: u32, b: u32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    cmyk.chunks_exact(4)
        .flat_map(|p| {
            let nk = 255 - u32::from(p[3]);
            [0, 1, 2].map(|i| (nk - muldiv255(u32::from(p[i]), nk)) as u8)
        })
        .collect()
}

/// Whether a TIFF's first image is 8-bit CMYK, which the `image` crate converts with its own
/// (truncating) formula rather than Pillow's.
fn is_cmyk_tiff(bytes: &[u8]) -> bool {
    tiff::decoder::Decoder::new(Cursor::new(bytes))
        .and_then(|mut d| d.colortype())
        .is_ok_and(|c| c == tiff::ColorType::CMYK(8))
}

fn decode_cmyk_tiff(bytes: &[u8], max_pixels: u64) -> Result<Rgb8, String> {
    let tiff_error = |e: tiff::TiffError| match e {
        tiff::TiffError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("truncated or corrupt image ({e})")
        }
        e => format!("cannot decode ({e})"),
    };
    let mut decoder = tiff::decoder::Decoder::new(Cursor::new(bytes)).map_err(tiff_error)?;
    let (width, height) = decoder.dimensions().map_err(tiff_error)?;
    check_pixels(width.into(), height.into(), max_pixels)?;
    let mut tiff_limits = tiff::decoder::Limits::default();
    tiff_limits.decoding_buffer_size =
        usize::try_from(max_pixels.saturating_mul(4)).unwrap_or(usize::MAX);
    let mut decoder = decoder.with_limits(tiff_limits);
    match decoder.read_image().map_err(tiff_error)? {
        tiff::decoder::DecodingResult::U8(cmyk) => {
            let (width, height) = (width as usize, height as usize);
            if cmyk.len() < width * height * 4 {
                return Err("truncated or corrupt image (short CMYK data)".into());
            }
            Ok(Rgb8 {
                width,
                height,
                data: cmyk_to_rgb(&cmyk[..width * height * 4]),
            })
        }
        _ => Err("cannot decode (CMYK TIFF with unexpected sample type)".into()),
    }
}

/// A GIF's first frame as Pillow opens it: the logical screen, filled with the frame's
/// transparent index (else index 0) where the frame does not cover it, each index shown as its
/// palette colour (the frame's own palette, else the global one; gray when there is none).
fn decode_gif(bytes: &[u8], max_pixels: u64) -> Result<Rgb8, String> {
    let gif_error = |e: gif::DecodingError| {
        let short = match &e {
            gif::DecodingError::Io(e) => e.kind() == std::io::ErrorKind::UnexpectedEof,
            // The gif crate reports a stream that stops mid-frame as a format error.
            e => e.to_string().to_lowercase().contains("end of file"),
        };
        if short {
            format!("truncated or corrupt image ({e})")
        } else {
            format!("cannot decode ({e})")
        }
    };
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    if let Some(limit) = std::num::NonZeroU64::new(max_pixels) {
        options.set_memory_limit(gif::MemoryLimit::Bytes(limit));
    }
    let mut decoder = options.read_info(Cursor::new(bytes)).map_err(gif_error)?;
    let (width, height) = (usize::from(decoder.width()), usize::from(decoder.height()));
    check_pixels(width as u64, height as u64, max_pixels)?;
    let global = decoder.global_palette().map(<[u8]>::to_vec);
    let frame = decoder
        .read_next_frame()
        .map_err(gif_error)?
        .ok_or("truncated or corrupt image (no frame)")?;
    let palette = frame.palette.clone().or(global);
    let mut indices = vec![frame.transparent.unwrap_or(0); width * height];
    let (left, top) = (usize::from(frame.left), usize::from(frame.top));
    let frame_width = usize::from(frame.width);
    for (y, row) in frame.buffer.chunks_exact(frame_width.max(1)).enumerate() {
        let Some(dest_row) = indices.chunks_exact_mut(width).nth(top + y) else {
            break;
        };
        for (x, &index) in row.iter().enumerate() {
            if let Some(dest) = dest_row.get_mut(left + x) {
                *dest = index;
            }
        }
    }
    let colour = |index: u8| -> [u8; 3] {
        match &palette {
            Some(p) => {
                let i = usize::from(index) * 3;
                p.get(i..i + 3).map_or([0; 3], |c| [c[0], c[1], c[2]])
            }
            None => [index; 3],
        }
    };
    Ok(Rgb8 {
        width,
        height,
        data: indices.into_iter().flat_map(colour).collect(),
    })
}
