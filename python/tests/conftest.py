"""Shared by the Python tests: the repository's committed fixtures, a safetensors reader
(numpy only) and the `vitmsn` command line the outputs are compared with."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
SAMPLES = REPO / "samples"
# Tiny generated checkpoints (32x32 images, hidden size 32) without preprocessor_config.json.
BARE_MODEL = FIXTURES / "base_all_outputs" / "model"
CLASSIFIER = FIXTURES / "classifier_ce" / "model"

_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path: Path) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """A safetensors file's tensors (bf16 widened to float32) and its metadata."""
    data = Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = memoryview(data)[8 + header_len :]
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        raw = body[start:end]
        if entry["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=_DTYPES[entry["dtype"]])
        tensors[name] = array.reshape(entry["shape"]).copy()
    return tensors, metadata


def fixture_cases():
    return sorted(p for p in FIXTURES.iterdir() if (p / "case.json").exists())


def cli_binary() -> Path:
    """The `vitmsn` binary: `VITMSN_CLI`, else the newest one under the cargo target dir."""
    if "VITMSN_CLI" in os.environ:
        return Path(os.environ["VITMSN_CLI"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    built = [p for p in (target / "release" / "vitmsn", target / "debug" / "vitmsn") if p.exists()]
    if built:
        return max(built, key=lambda p: p.stat().st_mtime)
    found = shutil.which("vitmsn")
    if found:
        return Path(found)
    message = "no vitmsn binary: build it (cargo build) or set VITMSN_CLI"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def cli():
    binary = cli_binary()

    def run(*args: str) -> str:
        out = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True)
        assert out.returncode == 0, f"vitmsn {' '.join(map(str, args))}: {out.stderr}"
        return out.stdout

    return run


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """max|ours - reference| / max(1, max|reference|), as tests/common does."""
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    if not np.all(np.isfinite(ours)):
        return float("inf")
    reference = reference.astype(np.float32)
    scale = max(1.0, float(np.abs(reference).max(initial=0.0)))
    return float(np.abs(ours - reference).max(initial=0.0)) / scale


def require(module: str):
    """Imports an optional test dependency: skips without it, except in CI, where it fails."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module)
