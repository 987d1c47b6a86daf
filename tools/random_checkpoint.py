#!/usr/bin/env python3
"""Writes a ViTMSNModel checkpoint of a published shape with random weights (numpy only):
`config.json` and `model.safetensors`, as `save_pretrained` lays them out, for timing
(docs/python.md's Ray figures) where the real weights cannot be downloaded.

    python tools/random_checkpoint.py /tmp/vit-msn-small-random [--arch vit-msn-small]
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

import numpy as np

# (hidden, layers, heads, patch) of facebook/vit-msn-*, as src/bench.rs names them.
ARCHITECTURES = {
    "vit-msn-small": (384, 12, 6, 16),
    "vit-msn-base": (768, 12, 12, 16),
    "vit-msn-large": (1024, 24, 16, 16),
}
IMAGE_SIZE = 224


def tensors(hidden: int, layers: int, patch: int, rng: np.random.Generator):
    def normal(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    tokens = (IMAGE_SIZE // patch) ** 2 + 1
    yield "embeddings.cls_token", normal(1, 1, hidden)
    yield "embeddings.position_embeddings", normal(1, tokens, hidden)
    yield "embeddings.patch_embeddings.projection.weight", normal(hidden, 3, patch, patch)
    yield "embeddings.patch_embeddings.projection.bias", normal(hidden)
    linears = {
        "attention.attention.query": (hidden, hidden),
        "attention.attention.key": (hidden, hidden),
        "attention.attention.value": (hidden, hidden),
        "attention.output.dense": (hidden, hidden),
        "intermediate.dense": (4 * hidden, hidden),
        "output.dense": (hidden, 4 * hidden),
    }
    for layer in range(layers):
        prefix = f"encoder.layer.{layer}"
        for name, (out_features, in_features) in linears.items():
            yield f"{prefix}.{name}.weight", normal(out_features, in_features)
            yield f"{prefix}.{name}.bias", normal(out_features)
        for norm in ("layernorm_before", "layernorm_after"):
            yield f"{prefix}.{norm}.weight", np.ones(hidden, np.float32)
            yield f"{prefix}.{norm}.bias", np.zeros(hidden, np.float32)
    yield "layernorm.weight", np.ones(hidden, np.float32)
    yield "layernorm.bias", np.zeros(hidden, np.float32)


def write_safetensors(path: Path, named) -> None:
    header, offset, chunks = {}, 0, []
    for name, array in named:
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        chunks.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for chunk in chunks:
            f.write(chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="the folder to write")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="vit-msn-small")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    hidden, layers, heads, patch = ARCHITECTURES[args.arch]
    args.output.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["ViTMSNModel"],
        "model_type": "vit_msn",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": 4 * hidden,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
        "image_size": IMAGE_SIZE,
        "patch_size": patch,
        "num_channels": 3,
        "qkv_bias": True,
    }
    (args.output / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    rng = np.random.default_rng(args.seed)
    write_safetensors(args.output / "model.safetensors", tensors(hidden, layers, patch, rng))
    print(f"wrote {args.arch} with random weights to {args.output}")


if __name__ == "__main__":
    main()
