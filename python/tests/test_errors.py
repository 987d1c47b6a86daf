"""Errors raise ValueError, OSError or RuntimeError with the engine's one-line message;
none takes the interpreter down."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import vitmsn
from conftest import BARE_MODEL, CLASSIFIER, FIXTURES, SAMPLES

PIXELS = np.zeros((1, 3, 32, 32), dtype=np.float32)


@pytest.fixture(scope="module")
def model():
    return vitmsn.ViTMSN(BARE_MODEL)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"backend": "tpu"}, "unknown backend"),
        ({"precision": "f8"}, "unknown precision"),
        ({"backend": "scalar", "threads": 2}, "threads applies to the cpu backend"),
        ({"threads": 0}, "at least 1"),
        ({"threads": 1_000_000}, "above the limit"),
        ({"precision": "f16"}, "precision f16 runs on the gpu backend only"),
    ],
)
def test_bad_options_raise_value_error(options, message):
    with pytest.raises(ValueError, match=message):
        vitmsn.ViTMSN(BARE_MODEL, **options)


def test_missing_checkpoint_raises_os_error(tmp_path):
    with pytest.raises(OSError, match="config.json"):
        vitmsn.ViTMSN(tmp_path / "nowhere")


def test_broken_checkpoint_raises_value_error(tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(BARE_MODEL, broken)
    (broken / "config.json").write_text('{"hidden_size": "wide"}')
    with pytest.raises(ValueError, match="config"):
        vitmsn.ViTMSN(broken)
    shutil.copy(BARE_MODEL / "config.json", broken / "config.json")
    (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(ValueError, match="weights"):
        vitmsn.ViTMSN(broken)


def test_gpu_backend_loads_or_raises_runtime_error():
    try:
        vitmsn.ViTMSN(BARE_MODEL, backend="gpu")
    except RuntimeError as e:
        assert str(e).startswith("backend:"), e


@pytest.mark.parametrize(
    "arguments,message",
    [
        ({"pixel_values": np.zeros((1, 3, 32), np.float32)}, "expected \\[batch"),
        ({"pixel_values": np.zeros((1, 4, 32, 32), np.float32)}, "4 channels"),
        ({"pixel_values": np.zeros((0, 3, 32, 32), np.float32)}, "empty batch"),
        ({"pixel_values": np.zeros((1, 3, 32, 32), np.float64)}, "float32 or float16"),
        ({"pixel_values": PIXELS, "head_mask": np.ones(5)}, "head_mask has shape"),
        ({"pixel_values": PIXELS, "labels": np.array([1])}, "no classification head"),
        ({"pixel_values": PIXELS, "bool_masked_pos": np.ones((1, 16), bool)}, "mask_token"),
        ({"pixel_values": PIXELS, "bool_masked_pos": np.ones(16, bool)}, "bool_masked_pos"),
    ],
)
def test_bad_forward_inputs_raise_value_error(model, arguments, message):
    with pytest.raises(ValueError, match=message):
        model.forward(**arguments)


def test_labels_of_the_wrong_size_raise_value_error():
    classifier = vitmsn.ViTMSN(CLASSIFIER)
    with pytest.raises(ValueError, match="labels"):
        classifier.forward(PIXELS, labels=np.array([1, 2, 3]))


def test_image_errors(model, tmp_path):
    with pytest.raises(OSError, match="missing.jpg"):
        model.embed([tmp_path / "missing.jpg"])
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a picture")
    with pytest.raises(ValueError, match="junk.jpg"):
        model.embed([junk])
    with pytest.raises(ValueError, match="uint8"):
        model.embed([np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match="uint8"):
        model.preprocess([np.zeros((8, 8, 4), np.uint8)])
    with pytest.raises(ValueError, match="unknown feature"):
        model.embed([SAMPLES / "query/cat/cat-1.jpg"], features=["clss"])
    with pytest.raises(ValueError, match="no classification head"):
        model.classify([SAMPLES / "query/cat/cat-1.jpg"])
    with pytest.raises(ValueError, match="top_k"):
        model.classify(PIXELS, top_k=0)
    with pytest.raises(OSError):
        vitmsn.collect_images([FIXTURES / "no-such-folder"])


def test_the_model_still_works_after_errors(model):
    with pytest.raises(ValueError):
        model.forward(np.zeros((1, 3, 8), np.float32))
    assert model.forward(PIXELS)["last_hidden_state"].shape == (1, 17, 32)
