#!/usr/bin/env python3
"""Generate the image preprocessing fixtures: small image files + transformers' pixel_values.

Writes tests/fixtures/images/:

  <case source files>    JPEG, PNG, WebP, BMP, GIF and TIFF files in the modes vitmsn must
                         accept, made from scikit-image's sample photos (skimage.data:
                         astronaut and rocket are NASA, public domain; chelsea and coffee are
                         CC0; hubble_deep_field is NASA/ESA, public domain)
  bomb.png, bomb.jpg,    tiny files whose headers declare huge images (decompression bombs)
  bomb.gif
  expected.safetensors   f32 [3, H, W] per case, keyed by case name: transformers'
                         ViTImageProcessor pixel_values[0] for the case's preprocessor config
  manifest.json          the library versions that made them, and the cases: name, file,
                         group ("exact": vitmsn must be bit-identical; "jpeg": JPEG decoders
                         may round differently, so bounded), config (preprocessor_config.json
                         contents), crop (MSN's Resize + CenterCrop in place of the resize)

The reference for a case is `ViTImageProcessor.from_dict(config)(Image.open(f).convert("RGB"),
return_tensors="np")`: images are converted to RGB with Pillow first, since vitmsn accepts
every mode and transformers refuses some (RGBA would keep four channels, I;16 has no RGB
path). For crop cases, the resize and crop are torchvision's Resize(short) + CenterCrop(size)
done with Pillow directly (the shorter side to max(size) * 256 // 224 with the configured
filter, the longer side truncated, offsets rounded half to even), then the processor rescales
and normalizes with do_resize=False.

Usage (from the repository root):
  /path/to/venv/bin/python tools/make_image_fixtures.py           # (re)generate everything
  /path/to/venv/bin/python tools/make_image_fixtures.py --check   # regenerate in memory and
                                                                  # verify the committed files
Needs Pillow, numpy, scikit-image, safetensors and transformers (no torch).
"""

import argparse
import io
import json
import os
import platform
import struct
import sys
import zlib

import numpy as np
import PIL
import safetensors
import safetensors.numpy
import skimage
import skimage.data
import transformers
from PIL import Image, features

EXPECTED_TRANSFORMERS = "4.57.6"

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "images")

# PIL's filter codes, as preprocessor_config.json writes them.
FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def msn_config(height, width, resample="bilinear", **over):
    """The facebook/vit-msn-* preprocessor_config.json with another size and filter."""
    cfg = {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
        "resample": FILTERS[resample],
        "rescale_factor": 0.00392156862745098,
        "size": {"height": height, "width": width},
    }
    cfg.update(over)
    return cfg


# ----------------------------------------------------------------------------------------------
# Source images
# ----------------------------------------------------------------------------------------------


def photo(name, size=None, box=None, mode="RGB"):
    """A skimage.data photo, optionally cropped to box (l, t, r, b) and scaled to size (w, h)."""
    im = Image.fromarray(getattr(skimage.data, name)())
    if box is not None:
        im = im.crop(box)
    if size is not None:
        im = im.resize(size, Image.Resampling.LANCZOS)
    return im.convert(mode)


def encode(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def alpha_ramp(w, h):
    """An alpha channel running from transparent (top left) to opaque (bottom right)."""
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(((x + y) * 255 // (w + h - 2)).astype(np.uint8), "L")


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_rgb16(arr):
    """A 16-bit RGB PNG (Pillow writes RGB PNGs at 8 bits only), written by hand."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(raw, 9))
        + png_chunk(b"IEND", b"")
    )


def make_rgb16():
    """Rocket at 16 bits: the 8-bit photo in the high byte, a pattern in the low byte (which
    Pillow's RGB;16B raw mode drops)."""
    arr = np.asarray(photo("rocket", (64, 40), box=(100, 100, 580, 400))).astype(np.uint16)
    low = (np.arange(arr.size, dtype=np.uint16).reshape(arr.shape) * 37) % 256
    return png_rgb16((arr << 8) | low)


def make_gray16():
    """16-bit gray with values up to 510: Pillow opens it as I;16 and clips at 255 to RGB."""
    arr = np.asarray(photo("rocket", (64, 40), box=(100, 100, 580, 400), mode="L")).astype(np.uint16) * 2
    return encode(Image.fromarray(arr), "PNG")


def make_rgba():
    im = photo("astronaut", (64, 64))
    im.putalpha(alpha_ramp(64, 64))
    return encode(im, "PNG")


def make_la():
    im = photo("astronaut", (64, 64), mode="L").convert("LA")
    im.putalpha(alpha_ramp(64, 64))
    return encode(im, "PNG")


def make_p_trns():
    """Palette PNG with a transparent index: convert("RGB") shows that index's colour."""
    im = photo("chelsea", (72, 48)).quantize(colors=64)
    return encode(im, "PNG", transparency=5)


def make_gif():
    """Animated GIF: two frames with a transparent index; vitmsn takes the first frame."""
    first = photo("astronaut", (48, 48)).quantize(colors=32)
    second = photo("chelsea", (48, 48), box=(100, 0, 400, 300)).quantize(colors=32)
    return encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0, transparency=3)


def make_cmyk_tiff():
    return encode(photo("coffee", (80, 60), mode="CMYK"), "TIFF")


def make_bomb_png():
    """A valid PNG header declaring 100000 x 100000 RGB pixels (30 GB decoded), 60-odd bytes."""
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16, 9))
        + png_chunk(b"IEND", b"")
    )


def make_bomb_jpg():
    """An 8x8 JPEG whose frame header is patched to declare 65500 x 65500 (JPEG's maximum is
    65535 a side): 4.3 gigapixels."""
    data = bytearray(encode(Image.new("RGB", (8, 8), (90, 120, 200)), "JPEG", quality=90))
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65500, 65500)
    return bytes(data)


def make_bomb_gif():
    """A GIF whose screen and frame declare 65535 x 65535 (GIF's maximum), a few dozen bytes."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x02\x4c\x01\x00"
    return screen + frame + b"\x3b"


# name -> bytes
SOURCES = {
    # JPEG: real photos of several sizes and aspect ratios, Pillow's libjpeg-turbo encoder.
    "astronaut_320.jpg": lambda: encode(photo("astronaut", (320, 320)), "JPEG", quality=90),
    "chelsea_451x300.jpg": lambda: encode(photo("chelsea"), "JPEG", quality=85),
    "rocket_portrait_150x240.jpg": lambda: encode(
        photo("rocket", (150, 240), box=(180, 0, 447, 427)), "JPEG", quality=90
    ),
    "coffee_small_64x48.jpg": lambda: encode(photo("coffee", (64, 48)), "JPEG", quality=90),
    "astronaut_gray_200.jpg": lambda: encode(photo("astronaut", (200, 200), mode="L"), "JPEG", quality=90),
    "chelsea_cmyk_180x120.jpg": lambda: encode(photo("chelsea", (180, 120), mode="CMYK"), "JPEG", quality=90),
    "hubble_progressive_444_250x218.jpg": lambda: encode(
        photo("hubble_deep_field", (250, 218)), "JPEG", quality=90, progressive=True, subsampling=0
    ),
    # PNG in every mode Pillow reads.
    "coffee_rgb_120x80.png": lambda: encode(photo("coffee", (120, 80)), "PNG"),
    "coffee_rgb_24x16.png": lambda: encode(photo("coffee", (24, 16)), "PNG"),
    "astronaut_rgba_64.png": make_rgba,
    "astronaut_l_64.png": lambda: encode(photo("astronaut", (64, 64), mode="L"), "PNG"),
    "astronaut_la_64.png": make_la,
    "chelsea_p_trns_72x48.png": make_p_trns,
    "rocket_rgb16_64x40.png": make_rgb16,
    "rocket_gray16_64x40.png": make_gray16,
    # WebP, lossy and lossless (with alpha).
    "chelsea_lossy_90x60.webp": lambda: encode(photo("chelsea", (90, 60)), "WEBP", quality=80, method=4),
    "chelsea_lossless_90x60.webp": lambda: encode(photo("chelsea", (90, 60)), "WEBP", lossless=True),
    "astronaut_lossless_rgba_64.webp": lambda: encode(
        Image.open(io.BytesIO(make_rgba())), "WEBP", lossless=True, exact=True
    ),
    # BMP, GIF, TIFF.
    "hubble_rgb_80x70.bmp": lambda: encode(photo("hubble_deep_field", (80, 70)), "BMP"),
    "astronaut_anim_trns_48.gif": make_gif,
    "coffee_rgb_lzw_80x60.tif": lambda: encode(photo("coffee", (80, 60)), "TIFF", compression="tiff_lzw"),
    "coffee_cmyk_80x60.tif": make_cmyk_tiff,
    # Decompression bombs (no expected values: vitmsn must refuse them).
    "bomb.png": make_bomb_png,
    "bomb.jpg": make_bomb_jpg,
    "bomb.gif": make_bomb_gif,
}


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------


def case(name, file, config, description, crop=False):
    # JPEG decoders may round differently from Pillow's libjpeg-turbo; every other decoder must
    # give Pillow's pixels (lossy WebP included: image-webp reproduces libwebp's decoding and
    # YUV-to-RGB conversion, measured bit-identical).
    group = "jpeg" if file.endswith(".jpg") else "exact"
    return dict(name=name, file=file, group=group, config=config, crop=crop, description=description)


CASES = [
    # JPEG photos: the checkpoints' own config at 224, and smaller outputs.
    case("jpeg_square_224", "astronaut_320.jpg", msn_config(224, 224), "square JPEG shrunk to 224, vit-msn config"),
    case(
        "jpeg_landscape_crop_224",
        "chelsea_451x300.jpg",
        msn_config(224, 224),
        "landscape JPEG, --crop: Resize(256) to 385x256, CenterCrop(224)",
        crop=True,
    ),
    case(
        "jpeg_portrait_bicubic",
        "rocket_portrait_150x240.jpg",
        msn_config(64, 48, "bicubic"),
        "portrait JPEG to 48x64",
    ),
    case("jpeg_small_enlarge", "coffee_small_64x48.jpg", msn_config(80, 80), "JPEG smaller than the output"),
    case(
        "jpeg_small_no_resize",
        "coffee_small_64x48.jpg",
        msn_config(224, 224, do_resize=False),
        "do_resize false: the decoded pixels themselves",
    ),
    case("jpeg_gray", "astronaut_gray_200.jpg", msn_config(64, 64), "grayscale (L) JPEG"),
    case("jpeg_cmyk", "chelsea_cmyk_180x120.jpg", msn_config(48, 72), "Adobe CMYK JPEG"),
    case(
        "jpeg_progressive_444",
        "hubble_progressive_444_250x218.jpg",
        msn_config(64, 64, "lanczos"),
        "progressive JPEG without chroma subsampling",
    ),
    # PNG modes.
    case("png_rgb", "coffee_rgb_120x80.png", msn_config(40, 56), "RGB PNG, non-square size"),
    case("png_rgba", "astronaut_rgba_64.png", msn_config(32, 32), "RGBA PNG: alpha dropped"),
    case("png_l", "astronaut_l_64.png", msn_config(32, 32), "gray PNG"),
    case("png_la", "astronaut_la_64.png", msn_config(32, 32), "gray + alpha PNG"),
    case("png_p_trns", "chelsea_p_trns_72x48.png", msn_config(32, 48), "palette PNG with a transparent index"),
    case("png_rgb16", "rocket_rgb16_64x40.png", msn_config(32, 32), "16-bit RGB PNG"),
    case("png_gray16", "rocket_gray16_64x40.png", msn_config(32, 32), "16-bit gray PNG (I;16, clipped)"),
    # WebP, BMP, GIF, TIFF.
    case("webp_lossy", "chelsea_lossy_90x60.webp", msn_config(40, 60), "lossy WebP"),
    case("webp_lossless", "chelsea_lossless_90x60.webp", msn_config(40, 60), "lossless WebP"),
    case("webp_lossless_rgba", "astronaut_lossless_rgba_64.webp", msn_config(32, 32), "lossless WebP with alpha"),
    case("bmp_rgb", "hubble_rgb_80x70.bmp", msn_config(35, 40, "bicubic"), "24-bit BMP"),
    case("gif_first_frame", "astronaut_anim_trns_48.gif", msn_config(32, 32), "animated GIF: first frame"),
    case(
        "gif_no_resize",
        "astronaut_anim_trns_48.gif",
        msn_config(224, 224, do_resize=False),
        "animated GIF, do_resize false: the transparent index shows its palette colour",
    ),
    case("tiff_rgb_lzw", "coffee_rgb_lzw_80x60.tif", msn_config(30, 40), "LZW-compressed RGB TIFF"),
    case("tiff_cmyk", "coffee_cmyk_80x60.tif", msn_config(30, 40), "CMYK TIFF"),
    # Configs: defaults, scalar mean/std and int size, no normalize, no rescale, no resize.
    case("config_defaults", "coffee_rgb_120x80.png", {"size": 32}, "missing fields: ViTImageProcessor's defaults"),
    case(
        "config_scalar_mean",
        "coffee_rgb_120x80.png",
        {"size": 32, "image_mean": 0.5, "image_std": 0.25, "resample": 3},
        "scalar mean and std, int size",
    ),
    case(
        "config_no_normalize",
        "coffee_rgb_120x80.png",
        msn_config(24, 36, do_normalize=False),
        "rescaled to 0-1, not normalized",
    ),
    case(
        "config_no_rescale",
        "coffee_rgb_120x80.png",
        msn_config(24, 36, do_rescale=False),
        "normalized from 0-255 values",
    ),
    case(
        "config_no_resize",
        "coffee_rgb_24x16.png",
        msn_config(224, 224, do_resize=False),
        "do_resize false: the image keeps its 24x16 size",
    ),
    # Crop on lossless input: bit-exact, with offsets that tie (x.5, rounded to even).
    case(
        "crop_square",
        "coffee_rgb_120x80.png",
        msn_config(56, 56),
        "--crop at 56: Resize(64) to 96x64, CenterCrop(56)",
        crop=True,
    ),
    case(
        "crop_nonsquare_bicubic",
        "coffee_rgb_120x80.png",
        msn_config(40, 45, "bicubic"),
        "--crop at 40x45: Resize(51) to 76x51, CenterCrop offsets 5.5 and 15.5 round to 6 and 16",
        crop=True,
    ),
]

# Every filter shrinking (120x80 -> 36x28) and enlarging (24x16 -> 40x36).
for _filter in FILTERS:
    CASES.append(
        case(f"filter_{_filter}_shrink", "coffee_rgb_120x80.png", msn_config(28, 36, _filter), f"{_filter}, shrink")
    )
    CASES.append(
        case(f"filter_{_filter}_enlarge", "coffee_rgb_24x16.png", msn_config(36, 40, _filter), f"{_filter}, enlarge")
    )


# ----------------------------------------------------------------------------------------------
# Reference values
# ----------------------------------------------------------------------------------------------


def crop_transform(im, config):
    """torchvision's Resize(short) + CenterCrop((h, w)) on a PIL image, as vitmsn's --crop."""
    size = config["size"]
    crop_h, crop_w = (size, size) if isinstance(size, int) else (size["height"], size["width"])
    short = max(crop_h, crop_w) * 256 // 224
    w, h = im.size
    # torchvision's _compute_resized_output_size: the longer side is truncated.
    if w <= h:
        new_w, new_h = short, int(short * h / w)
    else:
        new_w, new_h = int(short * w / h), short
    im = im.resize((new_w, new_h), Image.Resampling(config.get("resample", 2)))
    # torchvision's center_crop: Python's round (half to even).
    top = int(round((new_h - crop_h) / 2.0))
    left = int(round((new_w - crop_w) / 2.0))
    return im.crop((left, top, left + crop_w, top + crop_h))


def reference(c, data):
    """transformers' pixel_values[0] for case c on the encoded image data."""
    from transformers import ViTImageProcessor

    im = Image.open(io.BytesIO(data))
    im = im.convert("RGB")
    config = dict(c["config"])
    if c["crop"]:
        im = crop_transform(im, config)
        config["do_resize"] = False
    processor = ViTImageProcessor.from_dict(config)
    out = processor(im, return_tensors="np")["pixel_values"]
    assert out.dtype == np.float32 and out.shape[:2] == (1, 3), (c["name"], out.dtype, out.shape)
    return np.ascontiguousarray(out[0])


def versions():
    return {
        "python": platform.python_version(),
        "Pillow": PIL.__version__,
        "libjpeg-turbo": features.version("libjpeg_turbo"),
        "libwebp": features.version("webp"),
        "zlib": features.version("zlib"),
        "libtiff": features.version("libtiff"),
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "scikit-image": skimage.__version__,
        "safetensors": safetensors.__version__,
    }


def build():
    """Everything the fixture folder holds, in memory: {file name: bytes}."""
    files = {name: make() for name, make in SOURCES.items()}
    expected = {c["name"]: reference(c, files[c["file"]]) for c in CASES}
    manifest = {
        "generator": "tools/make_image_fixtures.py",
        "versions": versions(),
        "cases": CASES,
    }
    files["expected.safetensors"] = safetensors.numpy.save(expected)
    files["manifest.json"] = (json.dumps(manifest, indent=1) + "\n").encode()
    return files, expected


def check(out):
    """Regenerate in memory; the committed files must match byte for byte, and the committed
    expected values must be transformers' on the committed image files."""
    files, _ = build()
    problems = []
    committed = sorted(os.listdir(out))
    for name in sorted(set(committed) - set(files)):
        problems.append(f"{name}: not made by this script")
    for name, data in files.items():
        path = os.path.join(out, name)
        if not os.path.exists(path):
            problems.append(f"{name}: missing")
            continue
        with open(path, "rb") as f:
            if f.read() != data:
                problems.append(f"{name}: differs from a fresh build")
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    if manifest["versions"] != versions():
        print(f"note: fixtures made with {manifest['versions']}, this is {versions()}")
    stored = safetensors.numpy.load_file(os.path.join(out, "expected.safetensors"))
    for c in manifest["cases"]:
        with open(os.path.join(out, c["file"]), "rb") as f:
            want = reference(c, f.read())
        got = stored.get(c["name"])
        if got is None or got.dtype != np.float32 or not np.array_equal(got, want):
            problems.append(f"{c['name']}: expected values are not transformers' on {c['file']}")
    total = sum(os.path.getsize(os.path.join(out, n)) for n in committed)
    for p in problems:
        print("MISMATCH", p)
    if problems:
        sys.exit(1)
    print(f"all {len(CASES)} cases and {len(SOURCES)} image files OK; {total / 1e6:.2f} MB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: tests/fixtures/images)")
    ap.add_argument("--check", action="store_true", help="verify the committed fixtures instead of writing")
    args = ap.parse_args()
    if transformers.__version__ != EXPECTED_TRANSFORMERS:
        print(f"WARNING: transformers {transformers.__version__} != {EXPECTED_TRANSFORMERS}", file=sys.stderr)
    transformers.logging.set_verbosity_error()
    names = [c["name"] for c in CASES]
    assert len(set(names)) == len(names)
    if args.check:
        check(args.out)
        return
    files, expected = build()
    os.makedirs(args.out, exist_ok=True)
    for name in os.listdir(args.out):
        if name not in files:
            os.remove(os.path.join(args.out, name))
    for name, data in files.items():
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(data)
    total = sum(len(d) for d in files.values())
    for name, v in expected.items():
        print(f"{name}: {list(v.shape)}")
    print(f"wrote {len(CASES)} cases and {len(SOURCES)} image files to {args.out}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
