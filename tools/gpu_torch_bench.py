#!/usr/bin/env python3
"""PyTorch on the architectures and shapes `vitmsn bench` and `examples/gpu_gemm.rs` time,
for comparison with the GPU backend (tools/gpu_check.sh runs it on the device machine).

One JSON object a line on stdout:
- a header: torch and transformers versions, the device, TF32 settings;
- "engine": "torch" rows: whole forwards of a randomly initialised ViTMSNModel
  (transformers, its default attention) or, without transformers, of a plain torch ViT
  encoder with the same shapes; median of --iters forwards after --warmup, timed with
  the device synchronised around each forward, pixels already on the device; and
  "median_ms_with_host_copies", pixels from and last_hidden_state back to host memory,
  as `vitmsn bench` times its forwards;
- "engine": "torch-gemm" rows: F.linear (with bias) on the encoder's four linear shapes
  at m = batch * tokens, CUDA events around --gemm-repeat products.

fp32 runs with TF32 off (torch.backends.cuda.matmul.allow_tf32 = False, cudnn too), so
they measure plain fp32 arithmetic as the WGSL shaders do. Without torch it prints one
line saying so and exits 0.
"""

import argparse
import json
import statistics
import sys
import time

# name: (hidden, layers, heads, patch); 224x224 images, intermediate = 4 * hidden, as
# vitmsn's bench::arch_config.
ARCHS = {
    "vit-msn-small": (384, 12, 6, 16),
    "vit-msn-base": (768, 12, 12, 16),
    "vit-msn-large": (1024, 24, 16, 16),
    "vit-msn-base-4": (768, 12, 12, 4),
    "vit-msn-large-7": (1024, 24, 16, 7),
}
IMAGE = 224
CHANNELS = 3


def emit(obj):
    print(json.dumps(obj), flush=True)


def shapes(arch):
    hidden, layers, heads, patch = ARCHS[arch]
    grid = IMAGE // patch
    return hidden, layers, heads, patch, grid * grid + 1


def flops_per_image(arch):
    """Multiply-adds x2 of one image's forward, counted as vitmsn bench counts them (the graph's Op::flops)."""
    hidden, layers, _, patch, tokens = shapes(arch)
    patches = tokens - 1
    d, i = hidden, 4 * hidden
    per_layer = 2.0 * tokens * d * (3 * d + d + 2 * i) + 4.0 * tokens * tokens * d
    return 2.0 * patches * CHANNELS * patch * patch * d + layers * per_layer


def parse_case(text):
    arch, _, batch = text.partition(":")
    if arch not in ARCHS or not batch.isdigit():
        raise argparse.ArgumentTypeError(f"expected ARCH:BATCH with ARCH in {sorted(ARCHS)}")
    return arch, int(batch)


def build_model(torch, arch, use_transformers):
    """A randomly initialised encoder of `arch` and what it is."""
    hidden, layers, heads, patch, _ = shapes(arch)
    if use_transformers:
        from transformers import ViTMSNConfig, ViTMSNModel

        config = ViTMSNConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            patch_size=patch,
            image_size=IMAGE,
        )
        model = ViTMSNModel(config)
        kind = "transformers ViTMSNModel, attn_implementation=" + str(
            getattr(model.config, "_attn_implementation", None)
        )
        return model, kind
    return PlainViT(torch, hidden, layers, heads, patch), "plain torch ViT encoder (sdpa)"


def PlainViT(torch, hidden, layers, heads, patch):
    """ViTMSN's encoder in plain torch: conv patch embedding, CLS and positions, pre-norm
    layers (separate q, k, v as transformers has them), final LayerNorm."""
    nn = torch.nn
    F = torch.nn.functional

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(hidden, eps=1e-6)
            self.q = nn.Linear(hidden, hidden)
            self.k = nn.Linear(hidden, hidden)
            self.v = nn.Linear(hidden, hidden)
            self.out = nn.Linear(hidden, hidden)
            self.norm2 = nn.LayerNorm(hidden, eps=1e-6)
            self.fc1 = nn.Linear(hidden, 4 * hidden)
            self.fc2 = nn.Linear(4 * hidden, hidden)

        def forward(self, x):
            b, t, _ = x.shape
            h = self.norm1(x)
            split = lambda y: y.view(b, t, heads, hidden // heads).transpose(1, 2)
            a = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)))
            x = x + self.out(a.transpose(1, 2).reshape(b, t, hidden))
            return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            grid = IMAGE // patch
            self.patch = nn.Conv2d(CHANNELS, hidden, patch, stride=patch)
            self.cls = nn.Parameter(torch.zeros(1, 1, hidden))
            self.pos = nn.Parameter(torch.randn(1, grid * grid + 1, hidden) * 0.02)
            self.layers = nn.ModuleList([Layer() for _ in range(layers)])
            self.norm = nn.LayerNorm(hidden, eps=1e-6)

        def forward(self, pixel_values):
            x = self.patch(pixel_values).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
            for layer in self.layers:
                x = layer(x)
            return self.norm(x)

    return Encoder()


def sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forwards(torch, model, arch, batch, dtype, device, warmup, iters):
    x = torch.randn(batch, CHANNELS, IMAGE, IMAGE, device=device, dtype=dtype)
    with torch.inference_mode():
        for _ in range(warmup):
            model(pixel_values=x)
        sync(torch, device)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            model(pixel_values=x)
            sync(torch, device)
            times.append((time.perf_counter() - start) * 1e3)
        # As `vitmsn bench` times a forward: pixels from host memory, last_hidden_state
        # back to it.
        x_host = x.cpu()
        copies = []
        for _ in range(max(3, iters // 2)):
            start = time.perf_counter()
            out = model(pixel_values=x_host.to(device))
            hidden = out if isinstance(out, torch.Tensor) else out.last_hidden_state
            hidden.cpu()
            copies.append((time.perf_counter() - start) * 1e3)
    median = statistics.median(times)
    gflop = flops_per_image(arch) / 1e9
    return {
        "median_ms": round(median, 3),
        "min_ms": round(min(times), 3),
        "images_per_s": round(batch / (median / 1e3), 3),
        "gflop_per_image": round(gflop, 3),
        "tflop_per_s": round(gflop * batch / median, 3),  # GFLOP per ms = TFLOP/s
        "median_ms_with_host_copies": round(statistics.median(copies), 3),
    }


def time_gemm(torch, m, n, k, dtype, device, repeat, iters):
    F = torch.nn.functional
    a = torch.randn(m, k, device=device, dtype=dtype)
    w = torch.randn(n, k, device=device, dtype=dtype)
    b = torch.randn(n, device=device, dtype=dtype)
    with torch.inference_mode():
        F.linear(a, w, b)
        sync(torch, device)
        times = []
        for _ in range(iters):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(repeat):
                    F.linear(a, w, b)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t = time.perf_counter()
                for _ in range(repeat):
                    F.linear(a, w, b)
                times.append(time.perf_counter() - t)
    median = statistics.median(times)
    flop = 2.0 * m * n * k * repeat
    return {"repeat": repeat, "median_ms": round(median * 1e3, 4), "tflop_per_s": round(flop / median / 1e12, 3)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", type=parse_case, action="append",
                   help="ARCH:BATCH to time whole forwards of (repeatable)")
    p.add_argument("--gemm", type=parse_case, action="append", default=[],
                   help="ARCH:BATCH whose four linear shapes to time (repeatable)")
    p.add_argument("--precision", choices=["f32", "f16"], action="append")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--gemm-repeat", type=int, default=20)
    p.add_argument("--max-seconds", type=float, default=float("inf"),
                   help="start no new measurement after this long")
    p.add_argument("--plain", action="store_true", help="the plain torch encoder even if transformers is there")
    args = p.parse_args()
    cases = args.case or [(a, b) for a in ("vit-msn-small", "vit-msn-base") for b in (1, 8, 64)] + [("vit-msn-base-4", 1)]
    precisions = args.precision or ["f32", "f16"]
    began = time.monotonic()

    try:
        import torch
    except ImportError as e:
        emit({"torch": None, "note": f"PyTorch is not installed here ({e}); no PyTorch comparison"})
        return 0
    use_transformers = False
    transformers_version = None
    if not args.plain:
        try:
            import transformers
            from transformers import ViTMSNModel  # noqa: F401

            use_transformers, transformers_version = True, transformers.__version__
        except Exception as e:  # any import failure: fall back to the plain encoder
            transformers_version = f"unusable: {e}"
    if args.device == "cuda" and not torch.cuda.is_available():
        emit({"torch": torch.__version__, "error": "torch.cuda.is_available() is False"})
        return 1
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    emit({
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers_version,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    })
    dtypes = {"f32": torch.float32, "f16": torch.float16}

    def out_of_time():
        return time.monotonic() - began > args.max_seconds

    failures = 0
    for precision in precisions:
        dtype = dtypes[precision]
        models = {}
        for arch, batch in cases:
            row = {"engine": "torch", "model": arch, "batch": batch, "precision": precision}
            if out_of_time():
                emit({**row, "skipped": "out of time"})
                continue
            try:
                if arch not in models:
                    models.clear()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    model, kind = build_model(torch, arch, use_transformers)
                    models[arch] = (model.to(device=device, dtype=dtype).eval(), kind)
                model, kind = models[arch]
                row.update(time_forwards(torch, model, arch, batch, dtype, device, args.warmup, args.iters))
                row.update({"iters": args.iters, "implementation": kind})
            except Exception as e:
                failures += 1
                row["error"] = f"{type(e).__name__}: {e}"
            emit(row)
        models.clear()
        for arch, batch in args.gemm:
            hidden, _, _, _, tokens = shapes(arch)
            m = batch * tokens
            for layer, n, k in (("qkv", 3 * hidden, hidden), ("attn_out", hidden, hidden),
                                ("mlp_in", 4 * hidden, hidden), ("mlp_out", hidden, 4 * hidden)):
                row = {"engine": "torch-gemm", "arch": arch, "batch": batch, "layer": layer,
                       "precision": precision, "m": m, "n": n, "k": k}
                if out_of_time():
                    emit({**row, "skipped": "out of time"})
                    continue
                try:
                    row.update(time_gemm(torch, m, n, k, dtype, device, args.gemm_repeat, max(3, args.iters // 2)))
                except Exception as e:
                    failures += 1
                    row["error"] = f"{type(e).__name__}: {e}"
                emit(row)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
