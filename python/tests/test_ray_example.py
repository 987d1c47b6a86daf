"""examples/ray_embed.py on a local Ray instance with two workers: its Parquet rows are
the command line's embeddings of the same files, bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import BARE_MODEL, REPO, SAMPLES, read_safetensors, require

EXAMPLE = REPO / "examples" / "ray_embed.py"


def test_ray_example_embeds_a_folder_as_the_command_line(cli, tmp_path):
    require("ray")
    pandas = require("pandas")
    expected_file = tmp_path / "cli.safetensors"
    cli("embed", SAMPLES, "--model", BARE_MODEL, "--output", expected_file)
    tensors, metadata = read_safetensors(expected_file)
    expected = dict(zip(json.loads(metadata["files"]), tensors["cls_embeddings"]))

    output = tmp_path / "embeddings"
    run = subprocess.run(
        [sys.executable, EXAMPLE, SAMPLES, "--model", BARE_MODEL, "--output", output,
         "--workers", "2", "--threads", "1", "--batch-size", "4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["images"] == len(expected) and report["workers"] == 2

    table = pandas.read_parquet(output)
    assert list(table.columns) == ["path", "embedding"]
    assert sorted(table["path"]) == sorted(expected)
    for path, embedding in zip(table["path"], table["embedding"]):
        np.testing.assert_array_equal(np.asarray(embedding, dtype=np.float32), expected[path], err_msg=path)
