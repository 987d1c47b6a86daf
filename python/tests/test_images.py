"""preprocess, embed and classify from paths, arrays and PIL images give what the command
line's `vitmsn preprocess`, `embed` and `classify` give on samples/."""

from __future__ import annotations

import json

import numpy as np
import pytest
import vitmsn
from conftest import BARE_MODEL, CLASSIFIER, SAMPLES, read_safetensors, require

Image = require("PIL.Image")

ALL_FEATURES = ("cls", "cls_prenorm", "mean")


@pytest.fixture(scope="module")
def files():
    return vitmsn.collect_images(SAMPLES)


@pytest.fixture(scope="module")
def cli_embeddings(cli, files, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "emb.safetensors"
    cli("embed", SAMPLES, "--model", BARE_MODEL, "--output", out, "--features", ",".join(ALL_FEATURES))
    tensors, metadata = read_safetensors(out)
    assert json.loads(metadata["files"]) == files
    return tensors


def test_collect_images_walks_folders_as_the_command_line(files):
    assert len(files) == 12 and files == sorted(files)
    assert vitmsn.collect_images(files[0]) == [files[0]]


def test_preprocess_equals_the_command_line(cli, files, tmp_path):
    out = tmp_path / "pixels.safetensors"
    cli("preprocess", SAMPLES, "--model", BARE_MODEL, "--output", out)
    expected = read_safetensors(out)[0]["pixel_values"]
    model = vitmsn.ViTMSN(BARE_MODEL)
    pixels = model.preprocess(files)
    assert pixels.dtype == np.float32 and pixels.shape == (12, 3, 32, 32)
    np.testing.assert_array_equal(pixels, expected)


def as_arrays(files):
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


@pytest.mark.parametrize("given", ["paths", "arrays", "pil"])
def test_embed_equals_the_command_line(cli_embeddings, files, given):
    images = {
        "paths": files,
        "arrays": as_arrays(files),
        "pil": [Image.open(f) for f in files],
    }[given]
    ours = vitmsn.ViTMSN(BARE_MODEL).embed(images, features=ALL_FEATURES)
    assert sorted(ours) == sorted(cli_embeddings)
    for name, expected in cli_embeddings.items():
        np.testing.assert_array_equal(ours[name], expected, err_msg=f"{given}: {name}")


def test_embed_of_pixel_values_equals_the_command_line(cli_embeddings, files):
    model = vitmsn.ViTMSN(BARE_MODEL)
    ours = model.embed(model.preprocess(files), features=ALL_FEATURES)
    for name, expected in cli_embeddings.items():
        # One batch of 12 instead of the command line's batches of 8.
        np.testing.assert_allclose(ours[name], expected, rtol=0, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("given", ["paths", "arrays", "pil", "pixel_values"])
def test_classify_equals_the_command_line(cli, files, given):
    report = json.loads(cli("classify", SAMPLES, "--model", CLASSIFIER, "--top-k", "3", "--json"))
    expected = [
        [(label["label"], label["probability"]) for label in image["labels"]]
        for image in report["predictions"]
    ]
    model = vitmsn.ViTMSN(CLASSIFIER)
    images = {
        "paths": files,
        "arrays": as_arrays(files),
        "pil": [Image.open(f) for f in files],
        "pixel_values": model.preprocess(files),
    }[given]
    ours = model.classify(images, top_k=3)
    assert [[label for label, _ in image] for image in ours] == [
        [label for label, _ in image] for image in expected
    ]
    np.testing.assert_allclose(
        [[p for _, p in image] for image in ours],
        [[p for _, p in image] for image in expected],
        rtol=0,
        atol=1e-6,
    )
