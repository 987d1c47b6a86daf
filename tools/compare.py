#!/usr/bin/env python3
"""Times vitmsn against transformers (eager and sdpa) and ONNX Runtime on the same
weights, configuration and thread count, one after another in one run, and writes
docs/benchmarks.md with the table and docs/benchmarks.png with a plot.

Needs a virtualenv with tools/requirements.txt plus onnxruntime, onnx and matplotlib
(not installed in CI). Run from the repository root after `cargo build --release`:

    .venv/bin/python tools/compare.py --threads 2 --iters 10
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# FMA peak of the issues' reference machine (AMD EPYC Zen 3, AVX2+FMA), GFLOP/s by
# threads; pass --peak for another machine.
ZEN3_PEAK_GFLOPS = {1: 94.0, 2: 182.0}

ARCHS = {
    # name: (hidden, layers, heads, patch)
    "vit-msn-small": (384, 12, 6, 16),
    "vit-msn-base": (768, 12, 12, 16),
    "vit-msn-large": (1024, 24, 16, 16),
    "vit-msn-base-4": (768, 12, 12, 4),
    "vit-msn-large-7": (1024, 24, 16, 7),
}

DEFAULT_RUNS = "vit-msn-small:1,vit-msn-small:8,vit-msn-base:1,vit-msn-base:8:5,vit-msn-large-7:1:3,vit-msn-base-4:1:3"


def flops_per_image(hidden, layers, patch, image=224, channels=3):
    patches = (image // patch) ** 2
    t = patches + 1
    inter = 4 * hidden
    per_layer = 2 * t * hidden * (3 * hidden + hidden + 2 * inter) + 4 * t * t * hidden
    return 2 * patches * channels * patch * patch * hidden + layers * per_layer


def make_model(arch, directory):
    import torch
    from transformers import ViTMSNConfig, ViTMSNModel

    hidden, layers, heads, patch = ARCHS[arch]
    config = ViTMSNConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        patch_size=patch,
        image_size=224,
    )
    torch.manual_seed(0)
    model = ViTMSNModel(config).eval()
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def median_ms(fn, iters):
    fn()  # warm-up
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_vitmsn(model_dir, batch, threads, iters, backend, isa):
    exe = ROOT / "target" / "release" / "vitmsn"
    cmd = [str(exe), "bench", "--model", str(model_dir), "--batch", str(batch), "--threads", str(threads),
           "--backend", backend, "--iters", str(iters), "--json"] + (["--isa", isa] if isa else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["median_ms"]


def time_torch(model_dir, batch, threads, iters, attn):
    import torch
    from transformers import ViTMSNModel

    torch.set_num_threads(threads)
    model = ViTMSNModel.from_pretrained(model_dir, attn_implementation=attn).eval()
    pixels = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        return median_ms(lambda: model(pixel_values=pixels), iters)


def time_onnxruntime(model_dir, batch, threads, iters, workdir):
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import ViTMSNModel

    onnx_path = Path(workdir) / f"model_b{batch}.onnx"
    if not onnx_path.exists():
        model = ViTMSNModel.from_pretrained(model_dir, attn_implementation="eager").eval()
        pixels = torch.randn(batch, 3, 224, 224)
        torch.onnx.export(model, (pixels,), str(onnx_path), input_names=["pixel_values"],
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    return median_ms(lambda: session.run(None, {"pixel_values": pixels}), iters)


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=DEFAULT_RUNS,
                        help="comma-separated arch:batch[:iters] list (iters overrides --iters for that run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--backend", default="cpu", help="vitmsn backend")
    parser.add_argument("--isa", help="vitmsn's CPU kernels (default: the best this CPU runs). With avx2 on "
                                      "an AVX-512 machine, PyTorch is capped at AVX2 too (MKL, oneDNN, ATen); "
                                      "ONNX Runtime has no such switch and keeps AVX-512")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--peak", type=float, help="this machine's FMA peak in GFLOP/s for --threads threads")
    parser.add_argument("--peak-note", default="", help="how --peak was measured, for the report")
    parser.add_argument("--rows", default=str(ROOT / "docs" / "benchmarks.json"),
                        help="where the measured rows are saved (with --render-only: read)")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the report from the saved rows (e.g. with a corrected --peak) without measuring")
    args = parser.parse_args()
    if args.isa == "avx2":
        # Read when torch loads its libraries, so set before the first import.
        os.environ.update(MKL_ENABLE_INSTRUCTIONS="AVX2", ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")

    import onnxruntime
    import torch
    import transformers

    peak = args.peak or ZEN3_PEAK_GFLOPS.get(args.threads)
    peak_note = args.peak_note or "the Zen 3 reference machine's FMA peak"
    if args.render_only:
        saved = json.loads(Path(args.rows).read_text())
        rows, versions, header = saved["rows"], saved["versions"], saved["header"]
    else:
        rows = measure(args)
        versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                    "onnxruntime": onnxruntime.__version__}
        header = {"cpu": cpu_name(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
                  "threads": args.threads, "iters": args.iters, "backend": args.backend, "isa": args.isa}
        Path(args.rows).write_text(json.dumps({"rows": rows, "versions": versions, "header": header}, indent=1))
    render(args, rows, versions, header, peak, peak_note)


def measure(args):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs.split(","):
            arch, batch, *run_iters = run.split(":")
            batch = int(batch)
            iters = int(run_iters[0]) if run_iters else args.iters
            model_dir = Path(tmp) / arch
            if not model_dir.exists():
                make_model(arch, model_dir)
            hidden, layers, heads, patch = ARCHS[arch]
            gflop = flops_per_image(hidden, layers, patch) / 1e9
            times = {
                "vitmsn": time_vitmsn(model_dir, batch, args.threads, iters, args.backend, args.isa),
                "torch eager": time_torch(model_dir, batch, args.threads, iters, "eager"),
                "torch sdpa": time_torch(model_dir, batch, args.threads, iters, "sdpa"),
                "onnxruntime": time_onnxruntime(model_dir, batch, args.threads, iters, model_dir),
            }
            row = {"arch": arch, "batch": batch, "iters": iters, "gflop": gflop, "ms": times}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def render(args, rows, versions, header, peak, peak_note):
    engines = ["vitmsn", "onnxruntime", "torch sdpa", "torch eager"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `tools/compare.py --threads {header['threads']} --iters {header['iters']}` in one run on "
        f"{header['cpu']} ({header['cores']} vCPUs), {header['date']}: "
        f"vitmsn `--backend {header['backend']}{' --isa ' + header['isa'] if header.get('isa') else ''}`, "
        f"{'PyTorch capped at AVX2, ONNX Runtime not (it has no switch), ' if header.get('isa') == 'avx2' else ''}torch {versions['torch']} with transformers {versions['transformers']}, "
        f"onnxruntime {versions['onnxruntime']}. Same random weights (224×224, `save_pretrained`) for all; "
        f"median of the iters column's forwards after one warm-up. ms per image (fraction of "
        f"{peak_note}: {peak:.0f} GFLOP/s for {header['threads']} threads)." if peak else "",
        "",
        "| model | batch | iters | GFLOP/image | " + " | ".join(engines) + " | vitmsn vs onnxruntime | vitmsn vs torch sdpa |",
        "|---|---|---|---|" + "---|" * len(engines) + "---|---|",
    ]
    for row in rows:
        cells = []
        for engine in engines:
            per_image = row["ms"][engine] / row["batch"]
            frac = f" ({row['gflop'] / per_image * 1e3 / peak:.0%})" if peak else ""
            cells.append(f"{per_image:.1f}{frac}")
        ms = row["ms"]
        lines.append(
            f"| {row['arch']} | {row['batch']} | {row['iters']} | {row['gflop']:.1f} | " + " | ".join(cells)
            + f" | {ms['onnxruntime'] / ms['vitmsn']:.2f}× | {ms['torch sdpa'] / ms['vitmsn']:.2f}× |"
        )
    lines += ["", "![ms per image](benchmarks.png)", ""]
    out = Path(args.out)
    existing = out.read_text() if out.exists() else ""
    # Keep hand-written sections that follow the generated table (kernel figures, GPU notes).
    marker = "\n## "
    tail = existing[existing.index(marker):] if marker in existing else ""
    out.write_text("\n".join(lines) + tail)
    plot(rows, engines, out.with_suffix(".png"))
    print(f"wrote {out}", file=sys.stderr)


def plot(rows, engines, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['arch']}\nbatch {r['batch']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4))
    width = 0.8 / len(engines)
    for i, engine in enumerate(engines):
        values = [r["ms"][engine] / r["batch"] for r in rows]
        ax.bar([x + i * width for x in range(len(rows))], values, width, label=engine)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(rows))], labels, fontsize=8)
    ax.set_ylabel("ms per image (lower is better)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
