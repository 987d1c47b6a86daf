"""precision: the reduced precisions of the cpu backend within the accuracy they promise,
the engine's default (f32, or int8 for a quantized checkpoint), and the engine's refusal
of a precision the backend does not run."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import vitmsn
from conftest import BARE_MODEL, SAMPLES

IMAGES = vitmsn.collect_images(SAMPLES)
FEATURES = ("cls", "cls_prenorm", "mean")


def cosines(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The cosine of each embedding (row) with its reference."""
    dots = np.sum(ours.astype(np.float64) * reference, axis=1)
    return dots / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))


def test_the_default_is_f32():
    assert vitmsn.ViTMSN(BARE_MODEL).precision == "f32"
    assert vitmsn.ViTMSN(BARE_MODEL, backend="scalar").precision == "f32"
    assert "precision='f32'" in repr(vitmsn.ViTMSN(BARE_MODEL))


# The least cosine each reduced precision promises (tests/reduced_precision.rs); measured
# on the sample photos: bf16 0.999995, int8 0.99995.
@pytest.mark.parametrize("precision,least_cosine", [("bf16", 0.9999), ("int8", 0.998)])
def test_reduced_precision_embeddings_are_within_their_bounds(precision, least_cosine):
    reference = vitmsn.ViTMSN(BARE_MODEL).embed(IMAGES, features=FEATURES)
    model = vitmsn.ViTMSN(BARE_MODEL, precision=precision)
    assert model.precision == precision
    ours = model.embed(IMAGES, features=FEATURES)
    for name, expected in reference.items():
        assert ours[name].shape == expected.shape == (len(IMAGES), 32)
        assert not np.array_equal(ours[name], expected), f"{precision} {name}: f32's bits"
        least = cosines(ours[name], expected).min()
        assert least >= least_cosine, f"{precision} {name}: cosine {least}"


@pytest.mark.parametrize(
    "options,message",
    [
        ({"backend": "scalar", "precision": "int8"}, "precision int8 runs on the cpu backend only"),
        ({"backend": "scalar", "precision": "bf16"}, "precision bf16 runs on the cpu backend only"),
        ({"precision": "f16"}, "precision f16 runs on the gpu backend only"),
    ],
)
def test_a_precision_the_backend_does_not_run_raises_value_error(options, message):
    with pytest.raises(ValueError, match=message):
        vitmsn.ViTMSN(BARE_MODEL, **options)


def test_a_quantized_checkpoint_runs_in_int8_unless_told_otherwise(cli, tmp_path):
    quantized_dir = tmp_path / "int8"
    cli("quantize", "--model", BARE_MODEL, "--output", quantized_dir)
    quantized = vitmsn.ViTMSN(quantized_dir)
    assert quantized.precision == "int8"
    # The same quantization as int8 chosen on the original checkpoint: the same bits.
    original = vitmsn.ViTMSN(BARE_MODEL, precision="int8")
    ours = quantized.embed(IMAGES, features=FEATURES)
    for name, expected in original.embed(IMAGES, features=FEATURES).items():
        np.testing.assert_array_equal(ours[name], expected)
    # Left to the default, the precision travels as the default: int8 again.
    assert pickle.loads(pickle.dumps(quantized)).precision == "int8"
    # Asked for, f32 runs on the dequantized weights; the scalar backend runs f32 only.
    assert vitmsn.ViTMSN(quantized_dir, precision="f32").precision == "f32"
    assert vitmsn.ViTMSN(quantized_dir, backend="scalar").precision == "f32"
