"""forward against transformers' outputs in tests/fixtures, every option, and what the
arrays look like on the way in and out."""

from __future__ import annotations

import json

import numpy as np
import pytest
import vitmsn
from conftest import BARE_MODEL, CLASSIFIER, fixture_cases, read_safetensors, relative_error

CASES = fixture_cases()


def run_case(case, backend):
    options = json.loads((case / "case.json").read_text())
    inputs, _ = read_safetensors(case / "inputs.safetensors")
    model = vitmsn.ViTMSN(case / "model", backend=backend)
    out = model.forward(
        inputs["pixel_values"],
        bool_masked_pos=inputs.get("bool_masked_pos"),
        head_mask=inputs.get("head_mask"),
        labels=inputs.get("labels"),
        output_attentions=options.get("output_attentions", False),
        output_hidden_states=options.get("output_hidden_states", False),
        interpolate_pos_encoding=options.get("interpolate_pos_encoding", False),
    )
    named = {}
    for name, value in out.items():
        if isinstance(value, tuple):
            named.update({f"{name}.{i}": v for i, v in enumerate(value)})
        else:
            named[name] = value
    return named


def test_there_are_fixture_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize("backend,tolerance", [("scalar", 1e-5), ("cpu", 1e-4)])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_fixture_matches_transformers(case, backend, tolerance):
    ours = run_case(case, backend)
    expected, _ = read_safetensors(case / "expected.safetensors")
    assert sorted(ours) == sorted(expected)
    for name, reference in expected.items():
        assert ours[name].dtype == np.float32
        error = relative_error(ours[name], reference)
        assert error <= tolerance, f"{case.name}/{name}: relative error {error:e}"


def test_outputs_have_transformers_names_types_and_shapes():
    model = vitmsn.ViTMSN(BARE_MODEL)
    assert not model.is_classifier
    assert model.hidden_size == 32 and model.image_size == (32, 32)
    pixels = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    out = model.forward(pixels)
    assert list(out) == ["last_hidden_state"]
    assert out["last_hidden_state"].shape == (2, 17, 32)
    out = model.forward(pixels, output_hidden_states=True, output_attentions=True)
    assert isinstance(out["hidden_states"], tuple) and len(out["hidden_states"]) == 3
    assert isinstance(out["attentions"], tuple) and len(out["attentions"]) == 2
    assert out["attentions"][0].shape == (2, 4, 17, 17)
    assert out["hidden_states"][-1].flags.writeable

    classifier = vitmsn.ViTMSN(CLASSIFIER)
    assert classifier.is_classifier
    out = classifier.forward(pixels, labels=np.array([1, 2]))
    assert list(out) == ["logits", "loss"]
    assert out["loss"].shape == () and out["loss"].dtype == np.float32
    assert np.isfinite(out["loss"])


def test_float16_and_strided_inputs_give_what_their_float32_copies_give():
    model = vitmsn.ViTMSN(BARE_MODEL)
    pixels = np.random.default_rng(1).standard_normal((2, 3, 32, 32), dtype=np.float32)
    half = pixels.astype(np.float16)
    expected = model.forward(half.astype(np.float32))["last_hidden_state"]
    np.testing.assert_array_equal(model.forward(half)["last_hidden_state"], expected)

    transposed = np.ascontiguousarray(pixels.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not transposed.flags.c_contiguous
    np.testing.assert_array_equal(
        model.forward(transposed)["last_hidden_state"],
        model.forward(pixels)["last_hidden_state"],
    )


def test_mask_and_head_mask_change_the_output_as_asked():
    case = next(c for c in CASES if c.name == "mask_token")
    inputs, _ = read_safetensors(case / "inputs.safetensors")
    model = vitmsn.ViTMSN(case / "model")
    pixels, mask = inputs["pixel_values"], inputs["bool_masked_pos"]
    plain = model.forward(pixels)["last_hidden_state"]
    # Any truthy dtype is taken as a mask.
    masked = model.forward(pixels, bool_masked_pos=mask.astype(np.uint8))["last_hidden_state"]
    assert not np.array_equal(plain, masked)
    np.testing.assert_array_equal(
        masked, model.forward(pixels, bool_masked_pos=mask)["last_hidden_state"]
    )
    heads = np.ones(4, dtype=np.float32)
    np.testing.assert_array_equal(model.forward(pixels, head_mask=heads)["last_hidden_state"], plain)
    heads[0] = 0.0
    assert not np.array_equal(model.forward(pixels, head_mask=heads)["last_hidden_state"], plain)


def test_interpolate_pos_encoding_takes_other_sizes():
    model = vitmsn.ViTMSN(BARE_MODEL)
    pixels = np.zeros((1, 3, 48, 40), dtype=np.float32)
    with pytest.raises(ValueError, match="48x40"):
        model.forward(pixels)
    out = model.forward(pixels, interpolate_pos_encoding=True)
    assert out["last_hidden_state"].shape == (1, 1 + 6 * 5, 32)
