#!/usr/bin/env python3
"""Generate small random ViTMSN checkpoints + transformers reference outputs.

Writes one directory per case under tests/fixtures/<case>/:

  model/                 exactly what `save_pretrained(dir, safe_serialization=True)` writes
  inputs.safetensors     pixel_values [B,C,H,W] (f32, or f16/bf16 in the pixels_* cases),
                         optional bool_masked_pos [B, num_patches] (BOOL, or U8),
                         optional head_mask f32 [heads] or [layers, heads],
                         optional labels (int64 or int32 [B], -100 ignored | f32 [B] |
                         f32 [B, num_labels])
  expected.safetensors   f32: last_hidden_state (ViTMSNModel) or logits (classifier),
                         loss (shape [], a scalar; only when labels are given),
                         hidden_states.{i} (i = 0..L), attentions.{i} (i = 0..L-1)
  case.json              {"output_hidden_states", "output_attentions",
                          "interpolate_pos_encoding", "description"}

and, beside the cases, activations/act2fn.safetensors: "x" [N] and, for every name in
transformers' ACT2FN (and "selu", which ACT2FN lacks: torch.nn.SELU, as act_selu uses),
that activation of x, all f32 as transformers computes them.

The references are computed by loading the *saved* checkpoint back with
attn_implementation="eager" and running it in float32 on CPU (for f16/bf16
checkpoints / inputs: f32 compute over the rounded values).

Usage (from the repository root, in a virtual environment with torch, safetensors, numpy
and transformers==4.57.6, CPU only):
  python tools/make_fixtures.py            # (re)generate all cases
  python tools/make_fixtures.py --check    # verify files + recompute
  python tools/make_fixtures.py --only base_all_outputs act_selu
Regenerating a case draws its random weights again, so a torch other than the one that
wrote a case may change its files: regenerate only the cases you change (--only).
"""

import argparse
import json
import math
import os
import shutil
import sys
import zlib

import torch
from torch import nn
from safetensors.torch import load_file, save_file

import transformers
from transformers import ViTMSNConfig, ViTMSNForImageClassification, ViTMSNModel
from transformers.models.vit_msn.modeling_vit_msn import ViTMSNEmbeddings

EXPECTED_TRANSFORMERS = "4.57.6"

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "fixtures")

# Base model config used unless a case overrides it.
BASE_CFG = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    image_size=32,
    patch_size=8,
    num_channels=3,
    hidden_act="gelu",
    qkv_bias=True,
    layer_norm_eps=1e-6,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)

ACT_CFG = dict(
    hidden_size=24,
    num_hidden_layers=1,
    num_attention_heads=3,
    intermediate_size=48,
    image_size=8,
    patch_size=4,
    num_channels=3,
)


def case(name, description, **kw):
    d = dict(
        name=name,
        description=description,
        cls="model",  # "model" -> ViTMSNModel, "classifier" -> ViTMSNForImageClassification
        cfg={},  # overrides of BASE_CFG
        use_mask_token=False,
        batch=2,
        input_hw=None,  # None -> config image_size square
        pixel_dtype="float32",
        weight_dtype="float32",
        head_mask=None,  # None | list (1d) | list of lists (2d)
        masked_pos=False,
        mask_dtype="bool",  # how bool_masked_pos is stored: "bool" | "uint8" (0/1)
        labels=None,  # None | "ce" | "regression" | "multilabel"
        label_dtype="int64",  # how "ce" labels are stored: "int64" | "int32"
        ignored_labels=(),  # positions whose "ce" label is -100 (ignore_index)
        output_hidden_states=False,
        output_attentions=False,
        interpolate_pos_encoding=False,
        max_shard_size=None,
        act_override=None,  # "selu": replace intermediate_act_fn with nn.SELU()
    )
    for k in kw:
        if k not in d:
            raise KeyError(k)
    d.update(kw)
    return d


CASES = [
    case(
        "base_all_outputs",
        "ViTMSNModel hidden 32, 2 layers, 4 heads, intermediate 64, image 32 patch 8, 3 channels, "
        "batch 2, gelu; all hidden states and attentions.",
        output_hidden_states=True,
        output_attentions=True,
    ),
    case(
        "odd_sizes",
        "ViTMSNModel hidden 24, 3 heads (head dim 8), intermediate 37, 2 layers, 1 channel, image 12 patch 4 "
        "(3x3 grid), batch 13, qkv_bias=False (no q/k/v biases in checkpoint), gelu_new, "
        "layer_norm_eps=0.05 (non-default, must be read from config); hidden states.",
        cfg=dict(
            hidden_size=24,
            num_attention_heads=3,
            intermediate_size=37,
            num_channels=1,
            image_size=12,
            patch_size=4,
            qkv_bias=False,
            hidden_act="gelu_new",
            layer_norm_eps=0.05,
        ),
        batch=13,
        output_hidden_states=True,
    ),
    case(
        "mask_token",
        "ViTMSNModel(config, use_mask_token=True): checkpoint has embeddings.mask_token (config.json does NOT "
        "record use_mask_token). Random bool_masked_pos [B, num_patches]; masked patch embeddings are replaced "
        "by mask_token before cls concat and position embeddings. Hidden states on.",
        use_mask_token=True,
        masked_pos=True,
        output_hidden_states=True,
    ),
    case(
        "head_mask_1d",
        "ViTMSNModel with head_mask of shape [heads]=[4] (applied to every layer) containing 0, 1 and "
        "fractional values; attentions and hidden states on.",
        head_mask=[1.0, 0.0, 0.35, 0.8],
        output_attentions=True,
        output_hidden_states=True,
    ),
    case(
        "head_mask_2d",
        "ViTMSNModel with head_mask of shape [layers, heads]=[2,4]; attentions and hidden states on.",
        head_mask=[[0.5, 1.0, 0.0, 0.9], [1.0, 0.25, 1.0, 0.0]],
        output_attentions=True,
        output_hidden_states=True,
    ),
    case(
        "interpolate_nonsquare",
        "ViTMSNModel config image 32 patch 8 (4x4 position grid); input 48x40 (H x W) with "
        "interpolate_pos_encoding -> 6x5 grid via bicubic (align_corners=False). Hidden states on.",
        input_hw=(48, 40),
        interpolate_pos_encoding=True,
        output_hidden_states=True,
    ),
    case(
        "interpolate_floor",
        "ViTMSNModel config image 32 patch 8; input 44x36 (not multiples of the patch) with "
        "interpolate_pos_encoding -> conv gives 5x4 patches, grid H//8 x W//8 = 5x4. Hidden states on.",
        input_hw=(44, 36),
        interpolate_pos_encoding=True,
        output_hidden_states=True,
    ),
    case(
        "interpolate_same_size",
        "ViTMSNModel config image 32 patch 8; input 32x32 (== config) with interpolate_pos_encoding=True "
        "(transformers returns the position embeddings unchanged). Hidden states on.",
        interpolate_pos_encoding=True,
        output_hidden_states=True,
    ),
    case(
        "interpolate_smaller",
        "ViTMSNModel config image 32 patch 8; input 24x24 with interpolate_pos_encoding -> 3x3 grid "
        "(bicubic downsampling of the 4x4 grid). Hidden states on.",
        input_hw=(24, 24),
        interpolate_pos_encoding=True,
        output_hidden_states=True,
    ),
    case(
        "interpolate_same_count_nonsquare",
        "ViTMSNModel config image 32 patch 8 (4x4=16 positions); input 64x16 -> 8x2=16 patches, same count "
        "but height != width so transformers DOES interpolate (bicubic 4x4 -> 8x2). Hidden states on.",
        input_hw=(64, 16),
        interpolate_pos_encoding=True,
        output_hidden_states=True,
    ),
    case(
        "classifier_ce",
        "ViTMSNForImageClassification num_labels 5 (id2label cat/dog/bird/fish/frog), int64 labels [B] -> "
        "cross-entropy loss (mean over batch, scalar). Classifier applied to final-layernormed CLS token. "
        "Hidden states and attentions on.",
        cls="classifier",
        cfg=dict(id2label={0: "cat", 1: "dog", 2: "bird", 3: "fish", 4: "frog"}),
        labels="ce",
        output_hidden_states=True,
        output_attentions=True,
    ),
    case(
        "classifier_regression",
        "ViTMSNForImageClassification (base config but 1 layer) num_labels 1 (problem_type unset -> "
        "regression), batch 3, f32 labels [B] -> MSE loss (mean, scalar) between logits.squeeze() and labels.",
        cls="classifier",
        cfg=dict(num_labels=1, num_hidden_layers=1),
        batch=3,
        labels="regression",
    ),
    case(
        "classifier_multilabel",
        "ViTMSNForImageClassification (base config but 1 layer) problem_type multi_label_classification "
        "(in config.json), num_labels 4, batch 3, f32 0/1 labels [B,4] -> BCE-with-logits loss (mean over all "
        "elements, scalar).",
        cls="classifier",
        cfg=dict(num_labels=4, num_hidden_layers=1, problem_type="multi_label_classification"),
        batch=3,
        labels="multilabel",
    ),
    case(
        "classifier_no_labels",
        "ViTMSNForImageClassification (base config but 1 layer) num_labels 3, no labels: logits only.",
        cls="classifier",
        cfg=dict(num_labels=3, num_hidden_layers=1),
    ),
    case(
        "classifier_large_batch",
        "ViTMSNForImageClassification num_labels 5, batch 13, int64 labels -> CE loss; input 16x24 with "
        "interpolate_pos_encoding (2x3 grid).",
        cls="classifier",
        cfg=dict(num_labels=5),
        batch=13,
        labels="ce",
        input_hw=(16, 24),
        interpolate_pos_encoding=True,
    ),
]

CASES += [
    case(
        "classifier_ce_ignore_index",
        "ViTMSNForImageClassification (base config but 1 layer) num_labels 5, batch 4, int64 labels with "
        "-100 (CrossEntropyLoss's ignore_index) at images 1 and 3: the loss is the mean over the other two.",
        cls="classifier",
        cfg=dict(num_labels=5, num_hidden_layers=1),
        batch=4,
        labels="ce",
        ignored_labels=(1, 3),
    ),
    case(
        "classifier_ce_int32",
        "ViTMSNForImageClassification (base config but 1 layer) num_labels 4, batch 3, labels stored as int32 "
        "(image 2's -100, ignored); the reference runs them as int64, which CrossEntropyLoss requires.",
        cls="classifier",
        cfg=dict(num_labels=4, num_hidden_layers=1),
        batch=3,
        labels="ce",
        label_dtype="int32",
        ignored_labels=(2,),
    ),
    case(
        "mask_token_u8",
        "As mask_token (1 layer), bool_masked_pos stored as uint8 0/1; the reference runs it as bool.",
        cfg=dict(num_hidden_layers=1),
        use_mask_token=True,
        masked_pos=True,
        mask_dtype="uint8",
    ),
    case(
        "mask_token_interpolate",
        "ViTMSNModel(use_mask_token=True), 1 layer, input 40x48 with interpolate_pos_encoding (5x6 grid from "
        "the 4x4 position grid) and a random bool_masked_pos [B, 30]: the mask token replaces patches before the "
        "interpolated position embeddings are added. Hidden states on.",
        cfg=dict(num_hidden_layers=1),
        use_mask_token=True,
        masked_pos=True,
        input_hw=(40, 48),
        interpolate_pos_encoding=True,
        output_hidden_states=True,
    ),
]

for _act in [
    "gelu",
    "gelu_new",
    "gelu_pytorch_tanh",
    "gelu_fast",
    "quick_gelu",
    "relu",
    "relu6",
    "relu2",
    "leaky_relu",
    "silu",
    "swish",
    "mish",
    "tanh",
    "sigmoid",
    "selu",
]:
    if _act == "selu":
        CASES.append(
            case(
                "act_selu",
                "1-layer ViTMSNModel (hidden 24, 3 heads, intermediate 48, image 8 patch 4, batch 2) with hidden_act "
                "'selu' in config.json. transformers' ACT2FN lacks 'selu': the reference was built with another "
                "act and each layer's intermediate_act_fn replaced by torch.nn.SELU().",
                cfg=dict(ACT_CFG, hidden_act="gelu"),
                act_override="selu",
            )
        )
    else:
        CASES.append(
            case(
                f"act_{_act}",
                f"1-layer ViTMSNModel (hidden 24, 3 heads, intermediate 48, image 8 patch 4, batch 2), hidden_act '{_act}'.",
                cfg=dict(ACT_CFG, hidden_act=_act),
            )
        )

CASES += [
    case(
        "weights_f16",
        "ViTMSNModel (base config) checkpoint saved in float16; reference = f32 compute over the f16-rounded "
        "weights (f32 pixel input). Hidden states on.",
        weight_dtype="float16",
        output_hidden_states=True,
    ),
    case(
        "weights_bf16",
        "ViTMSNForImageClassification num_labels 3 checkpoint saved in bfloat16; reference = f32 compute over "
        "the bf16-rounded weights (f32 pixel input).",
        cls="classifier",
        cfg=dict(num_labels=3),
        weight_dtype="bfloat16",
    ),
    case(
        "pixels_f16",
        "ViTMSNModel (base config but 1 layer, f32 weights), pixel_values stored as float16; reference = f32 "
        "compute on the f16 values converted to f32.",
        cfg=dict(num_hidden_layers=1),
        pixel_dtype="float16",
    ),
    case(
        "pixels_bf16",
        "ViTMSNModel (base config but 1 layer, f32 weights), pixel_values stored as bfloat16; reference = f32 "
        "compute on the bf16 values converted to f32.",
        cfg=dict(num_hidden_layers=1),
        pixel_dtype="bfloat16",
    ),
    case(
        "sharded",
        "ViTMSNModel (base config) saved with max_shard_size='24KB' -> model.safetensors.index.json + several "
        "model-0000i-of-0000n.safetensors shards. Hidden states on.",
        max_shard_size="24KB",
        output_hidden_states=True,
    ),
]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def seed_for(name):
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def build_config(c):
    cfg = dict(BASE_CFG)
    cfg.update(c["cfg"])
    return ViTMSNConfig(**cfg)


@torch.no_grad()
def randomize_(model):
    """Set every parameter far from its init, keeping activations O(1)."""
    touched = set()
    for mname, m in model.named_modules():
        pre = f"{mname}." if mname else ""
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, 1.0 / math.sqrt(m.in_features))
            touched.add(pre + "weight")
            if m.bias is not None:
                m.bias.normal_(0.0, 0.3)
                touched.add(pre + "bias")
        elif isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            m.weight.normal_(0.0, 1.0 / math.sqrt(fan_in))
            touched.add(pre + "weight")
            if m.bias is not None:
                m.bias.normal_(0.0, 0.3)
                touched.add(pre + "bias")
        elif isinstance(m, nn.LayerNorm):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.3)
            touched.update([pre + "weight", pre + "bias"])
        elif isinstance(m, ViTMSNEmbeddings):
            m.cls_token.normal_(0.0, 1.0)
            m.position_embeddings.normal_(0.0, 1.0)
            touched.update([pre + "cls_token", pre + "position_embeddings"])
            if m.mask_token is not None:
                m.mask_token.normal_(0.0, 1.0)
                touched.add(pre + "mask_token")
    names = {n for n, _ in model.named_parameters()}
    missing = names - touched
    if missing:
        raise RuntimeError(f"parameters not randomized: {sorted(missing)}")


def load_reference_model(c, model_dir):
    """Load the saved checkpoint back (eager attention) and return an f32 eval model."""
    config = ViTMSNConfig.from_pretrained(model_dir)
    if c["act_override"] == "selu":
        assert config.hidden_act == "selu"
        config.hidden_act = "gelu"  # placeholder, replaced below
    kwargs = dict(config=config, attn_implementation="eager", output_loading_info=True)
    if c["cls"] == "model":
        model, info = ViTMSNModel.from_pretrained(model_dir, use_mask_token=c["use_mask_token"], **kwargs)
    else:
        model, info = ViTMSNForImageClassification.from_pretrained(model_dir, **kwargs)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise RuntimeError(f"{c['name']}: loading info not clean: {bad}")
    if c["act_override"] == "selu":
        base = model if c["cls"] == "model" else model.vit
        for layer in base.encoder.layer:
            layer.intermediate.intermediate_act_fn = nn.SELU()
    model = model.float().eval()
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    return model


def make_inputs(c, config):
    B = c["batch"]
    H, W = c["input_hw"] if c["input_hw"] is not None else (config.image_size, config.image_size)
    inputs = {}
    pv = torch.randn(B, config.num_channels, H, W, dtype=torch.float32)
    inputs["pixel_values"] = pv.to(DTYPES[c["pixel_dtype"]]).contiguous()
    if c["masked_pos"]:
        num_patches = (H // config.patch_size) * (W // config.patch_size)
        m = torch.rand(B, num_patches) < 0.5
        m[0, 0] = True
        m[0, 1] = False
        m[-1, -1] = True
        inputs["bool_masked_pos"] = m.to(getattr(torch, c["mask_dtype"])).contiguous()
    if c["head_mask"] is not None:
        hm = torch.tensor(c["head_mask"], dtype=torch.float32)
        assert hm.shape[-1] == config.num_attention_heads
        if hm.dim() == 2:
            assert hm.shape[0] == config.num_hidden_layers
        inputs["head_mask"] = hm.contiguous()
    if c["labels"] == "ce":
        labels = torch.randint(0, config.num_labels, (B,), dtype=torch.int64)
        labels[list(c["ignored_labels"])] = -100
        inputs["labels"] = labels.to(getattr(torch, c["label_dtype"]))
    elif c["labels"] == "regression":
        assert config.num_labels == 1
        inputs["labels"] = torch.randn(B, dtype=torch.float32)
    elif c["labels"] == "multilabel":
        inputs["labels"] = (torch.rand(B, config.num_labels) < 0.5).to(torch.float32)
    return inputs


@torch.no_grad()
def run_reference(c, model, inputs):
    kw = dict(
        pixel_values=inputs["pixel_values"].to(torch.float32),
        interpolate_pos_encoding=c["interpolate_pos_encoding"],
        output_hidden_states=c["output_hidden_states"],
        output_attentions=c["output_attentions"],
        return_dict=True,
    )
    if "head_mask" in inputs:
        kw["head_mask"] = inputs["head_mask"]
    if "bool_masked_pos" in inputs:
        kw["bool_masked_pos"] = inputs["bool_masked_pos"].to(torch.bool)
    if "labels" in inputs:
        labels = inputs["labels"]
        kw["labels"] = labels.to(torch.int64) if labels.dtype == torch.int32 else labels
    out = model(**kw)
    exp = {}
    if c["cls"] == "model":
        exp["last_hidden_state"] = out.last_hidden_state
    else:
        exp["logits"] = out.logits
        if "labels" in inputs:
            assert out.loss is not None and out.loss.dim() == 0
            exp["loss"] = out.loss
    if c["output_hidden_states"]:
        for i, h in enumerate(out.hidden_states):
            exp[f"hidden_states.{i}"] = h
    else:
        assert out.hidden_states is None
    if c["output_attentions"]:
        for i, a in enumerate(out.attentions):
            exp[f"attentions.{i}"] = a
    else:
        assert out.attentions is None
    for k, v in exp.items():
        if not torch.isfinite(v).all():
            raise RuntimeError(f"{c['name']}: non-finite values in {k}")
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in exp.items()}


def generate_case(c, out_root):
    name = c["name"]
    case_dir = os.path.join(out_root, name)
    if os.path.exists(case_dir):
        shutil.rmtree(case_dir)
    model_dir = os.path.join(case_dir, "model")
    os.makedirs(model_dir)

    torch.manual_seed(seed_for(name))
    config = build_config(c)
    if c["cls"] == "model":
        model = ViTMSNModel(config, use_mask_token=c["use_mask_token"])
    else:
        model = ViTMSNForImageClassification(config)
    randomize_(model)
    model.eval()
    if c["weight_dtype"] != "float32":
        model = model.to(DTYPES[c["weight_dtype"]])
    save_kw = dict(safe_serialization=True)
    if c["max_shard_size"] is not None:
        save_kw["max_shard_size"] = c["max_shard_size"]
    model.save_pretrained(model_dir, **save_kw)
    if c["act_override"] == "selu":
        cfg_path = os.path.join(model_dir, "config.json")
        with open(cfg_path) as f:
            cfg_json = json.load(f)
        cfg_json["hidden_act"] = "selu"
        with open(cfg_path, "w") as f:
            json.dump(cfg_json, f, indent=2, sort_keys=True)
            f.write("\n")

    inputs = make_inputs(c, config)
    save_file(inputs, os.path.join(case_dir, "inputs.safetensors"))

    ref = load_reference_model(c, model_dir)
    expected = run_reference(c, ref, inputs)
    save_file(expected, os.path.join(case_dir, "expected.safetensors"))

    meta = dict(
        output_hidden_states=c["output_hidden_states"],
        output_attentions=c["output_attentions"],
        interpolate_pos_encoding=c["interpolate_pos_encoding"],
        description=c["description"],
    )
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    return expected


ACT2FN_DIR = "activations"


def act2fn_inputs():
    """Steps of 1/16 over [-20, 20], where every activation curves, and +-10^(e/2) from 1e-30
    to 1e30, where they saturate or grow like x^2."""
    sweep = torch.arange(-320, 321, dtype=torch.float32) / 16
    magnitudes = torch.tensor([10.0 ** (e / 2) for e in range(-60, 61)], dtype=torch.float32)
    return torch.cat([sweep, magnitudes, -magnitudes])


@torch.no_grad()
def act2fn_values():
    from transformers.activations import ACT2FN

    x = act2fn_inputs()
    values = {"x": x}
    for name in sorted(ACT2FN):
        values[name] = ACT2FN[name](x.clone()).to(torch.float32).contiguous()
    values["selu"] = nn.SELU()(x.clone())
    return values


def generate_act2fn(out_root):
    d = os.path.join(out_root, ACT2FN_DIR)
    os.makedirs(d, exist_ok=True)
    values = act2fn_values()
    save_file(values, os.path.join(d, "act2fn.safetensors"))
    print(f"wrote {ACT2FN_DIR}: x[{len(values['x'])}] through {len(values) - 1} activations")


def check_act2fn(out_root):
    stored = load_file(os.path.join(out_root, ACT2FN_DIR, "act2fn.safetensors"))
    values = act2fn_values()
    assert set(stored) == set(values), sorted(set(stored) ^ set(values))
    for k, v in values.items():
        assert torch.equal(stored[k], v), k
    print(f"OK {ACT2FN_DIR}: {len(values) - 1} activations")


# ----------------------------------------------------------------------------------------------
# --check: structural verification of the written files + recomputation of the references.
# ----------------------------------------------------------------------------------------------


def load_checkpoint_tensors(model_dir):
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        tensors = {}
        for shard in sorted(set(wm.values())):
            t = load_file(os.path.join(model_dir, shard))
            for k in t:
                assert wm[k] == shard, (k, shard)
            tensors.update(t)
        assert set(tensors) == set(wm), "index weight_map mismatch"
        return tensors, len(set(wm.values()))
    return load_file(os.path.join(model_dir, "model.safetensors")), 1


def check_case(c, out_root, verbose=True):
    name = c["name"]
    d = os.path.join(out_root, name)
    with open(os.path.join(d, "case.json")) as f:
        meta = json.load(f)
    assert set(meta) == {"output_hidden_states", "output_attentions", "interpolate_pos_encoding", "description"}
    for k in ("output_hidden_states", "output_attentions", "interpolate_pos_encoding"):
        assert meta[k] == c[k], (name, k)
    model_dir = os.path.join(d, "model")
    files = sorted(os.listdir(model_dir))
    weights, n_shards = load_checkpoint_tensors(model_dir)
    if c["max_shard_size"] is not None:
        assert n_shards >= 2 and "model.safetensors.index.json" in files, files
    else:
        assert files == ["config.json", "model.safetensors"], files
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    wdt = DTYPES[c["weight_dtype"]]
    for k, v in weights.items():
        assert v.dtype == wdt, (name, k, v.dtype)
    L, nh, hid = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["hidden_size"]
    pre = "" if c["cls"] == "model" else "vit."
    assert (pre + "embeddings.mask_token" in weights) == c["use_mask_token"]
    assert (pre + "encoder.layer.0.attention.attention.query.bias" in weights) == cfg["qkv_bias"]
    if c["act_override"]:
        assert cfg["hidden_act"] == c["act_override"]

    inputs = load_file(os.path.join(d, "inputs.safetensors"))
    expected = load_file(os.path.join(d, "expected.safetensors"))
    pv = inputs["pixel_values"]
    B, C, H, W = pv.shape
    assert pv.dtype == DTYPES[c["pixel_dtype"]]
    assert C == cfg["num_channels"] and B == c["batch"]
    p = cfg["patch_size"]
    if not c["interpolate_pos_encoding"]:
        assert H == W == cfg["image_size"]
    n_patches = (H // p) * (W // p)
    S = n_patches + 1
    allowed_inputs = {"pixel_values"}
    if "bool_masked_pos" in inputs:
        bm = inputs["bool_masked_pos"]
        assert bm.dtype == getattr(torch, c["mask_dtype"]) and tuple(bm.shape) == (B, n_patches)
        allowed_inputs.add("bool_masked_pos")
    if "head_mask" in inputs:
        hm = inputs["head_mask"]
        assert hm.dtype == torch.float32 and tuple(hm.shape) in [(nh,), (L, nh)]
        allowed_inputs.add("head_mask")
    if "labels" in inputs:
        lb = inputs["labels"]
        nl = len(cfg["id2label"])
        if c["labels"] == "ce":
            assert lb.dtype == getattr(torch, c["label_dtype"]) and tuple(lb.shape) == (B,)
            assert [i for i, v in enumerate(lb.tolist()) if v == -100] == list(c["ignored_labels"])
        elif c["labels"] == "regression":
            assert lb.dtype == torch.float32 and tuple(lb.shape) == (B,) and nl == 1
        else:
            assert lb.dtype == torch.float32 and tuple(lb.shape) == (B, nl)
        allowed_inputs.add("labels")
    assert set(inputs) == allowed_inputs, (name, set(inputs))

    want = {}
    if c["cls"] == "model":
        want["last_hidden_state"] = (B, S, hid)
    else:
        want["logits"] = (B, len(cfg["id2label"]))
        if "labels" in inputs:
            want["loss"] = ()
    if c["output_hidden_states"]:
        for i in range(L + 1):
            want[f"hidden_states.{i}"] = (B, S, hid)
    if c["output_attentions"]:
        for i in range(L):
            want[f"attentions.{i}"] = (B, nh, S, S)
    got = {k: tuple(v.shape) for k, v in expected.items()}
    assert got == want, (name, got, want)
    for k, v in expected.items():
        assert v.dtype == torch.float32 and torch.isfinite(v).all(), (name, k)

    # Recompute from the files on disk.
    ref = load_reference_model(c, model_dir)
    re = run_reference(c, ref, inputs)
    maxdiff = max((re[k] - expected[k]).abs().max().item() for k in expected)
    assert maxdiff <= 1e-5, (name, maxdiff)
    if verbose:
        shapes = ", ".join(f"{k}{list(v)}" for k, v in got.items())
        ins = ", ".join(f"{k}{list(v.shape)}:{str(v.dtype).replace('torch.', '')}" for k, v in inputs.items())
        print(f"OK {name}: inputs {ins} -> {shapes} (recompute maxdiff {maxdiff:.1e})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="output root (default: tests/fixtures)")
    ap.add_argument("--check", action="store_true", help="verify existing fixtures instead of generating")
    ap.add_argument("--only", nargs="*", help="case names to process")
    args = ap.parse_args()

    if transformers.__version__ != EXPECTED_TRANSFORMERS:
        print(
            f"WARNING: transformers {transformers.__version__} != {EXPECTED_TRANSFORMERS}; "
            "see tools/requirements.txt",
            file=sys.stderr,
        )
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()

    names = [c["name"] for c in CASES]
    assert len(set(names)) == len(names)
    selected = CASES
    if args.only:
        unknown = set(args.only) - set(names) - {ACT2FN_DIR}
        if unknown:
            ap.error(f"unknown cases: {sorted(unknown)}")
        selected = [c for c in CASES if c["name"] in args.only]

    if args.check:
        for c in selected:
            check_case(c, args.out)
        if not args.only or ACT2FN_DIR in args.only:
            check_act2fn(args.out)
        if not args.only:
            known = set(names) | {ACT2FN_DIR, "images"}
            stray = sorted(
                e for e in os.listdir(args.out) if os.path.isdir(os.path.join(args.out, e)) and e not in known
            )
            if stray:
                print(f"WARNING: directories not generated by this script: {stray}")
        total = 0
        for root, _, fs in os.walk(args.out):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in fs)
        print(f"all {len(selected)} cases OK; fixture tree {total / 1e6:.2f} MB")
        return

    os.makedirs(args.out, exist_ok=True)
    for c in selected:
        exp = generate_case(c, args.out)
        print(f"wrote {c['name']}: " + ", ".join(f"{k}{list(v.shape)}" for k, v in exp.items()))
    if not args.only or ACT2FN_DIR in args.only:
        generate_act2fn(args.out)


if __name__ == "__main__":
    main()
