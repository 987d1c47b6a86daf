#!/usr/bin/env python3
"""Times vitmsn against transformers (eager and sdpa) and ONNX Runtime on the same
weights, configuration and thread count, one after another in one run, and writes
docs/benchmarks.md with the table and docs/benchmarks.png with a plot.

With --precision bf16 or int8 it times vitmsn at that precision beside the reduced-precision
modes of the others (bf16: PyTorch on a bf16 model and under autocast; int8: ONNX Runtime's
dynamic quantization, per tensor and per channel, and PyTorch's), reports how close each
one's CLS embedding is to transformers' f32 output on the same input, and writes
docs/benchmarks-{precision}.md, .json and .png instead.

Needs a virtualenv with tools/requirements.txt plus onnxruntime, onnx and matplotlib
(not installed in CI). Run from the repository root after `cargo build --release`:

    .venv/bin/python tools/compare.py --threads 2 --iters 10
    .venv/bin/python tools/compare.py --threads 2 --iters 10 --precision int8
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

# The engines of each reduced precision, vitmsn first; their CLS embeddings are compared
# with transformers' f32 output.
REDUCED_ENGINES = {
    "bf16": ["vitmsn bf16", "torch bf16", "torch autocast bf16"],
    "int8": ["vitmsn int8", "onnxruntime int8", "onnxruntime int8 per-channel", "torch dynamic int8"],
}


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


def run_vitmsn(args, command, precision, *options):
    """Runs `vitmsn COMMAND` on the backend, threads and ISA of `args` at `precision` and returns
    its stdout; exits with vitmsn's own message if it fails (e.g. a build without that precision)."""
    cmd = [str(args.vitmsn), command, "--backend", args.backend, "--threads", str(args.threads), *options]
    cmd += (["--isa", args.isa] if args.isa else []) + (["--precision", precision] if precision != "f32" else [])
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        why = getattr(e, "stderr", None) or str(e)
        sys.exit(f"compare.py: `{' '.join(cmd)}` failed: {why.strip()}\n(--skip-vitmsn times the other engines alone)")


def time_vitmsn(args, model_dir, batch, iters, precision="f32"):
    out = run_vitmsn(args, "bench", precision, "--model", str(model_dir), "--batch", str(batch),
                     "--iters", str(iters), "--json")
    return json.loads(out.strip().splitlines()[-1])["median_ms"]


def vitmsn_output(args, model_dir, pixels, precision, workdir):
    """vitmsn's last_hidden_state for `pixels` (numpy f32 [B, 3, H, W]), through `vitmsn forward`."""
    from safetensors.numpy import load_file, save_file

    inputs, outputs = Path(workdir) / "pixels.safetensors", Path(workdir) / "out.safetensors"
    save_file({"pixel_values": pixels}, str(inputs))
    run_vitmsn(args, "forward", precision, "--model", str(model_dir), "--input", str(inputs),
               "--output", str(outputs), "--quiet")
    return load_file(str(outputs))["last_hidden_state"]


def torch_model(model_dir, attn):
    from transformers import ViTMSNModel

    return ViTMSNModel.from_pretrained(model_dir, attn_implementation=attn).eval()


def time_torch(model_dir, batch, threads, iters, attn):
    import torch

    torch.set_num_threads(threads)
    model = torch_model(model_dir, attn)
    pixels = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        return median_ms(lambda: model(pixel_values=pixels), iters)


def onnx_model(model_dir, batch, workdir):
    """The eager model exported to ONNX (opset 17) for `batch` images, once per run."""
    import torch

    onnx_path = Path(workdir) / f"model_b{batch}.onnx"
    if not onnx_path.exists():
        pixels = torch.randn(batch, 3, 224, 224)
        torch.onnx.export(torch_model(model_dir, "eager"), (pixels,), str(onnx_path), input_names=["pixel_values"],
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False)
    return onnx_path


def onnx_session(onnx_path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def time_onnxruntime(model_dir, batch, threads, iters, workdir):
    import numpy as np

    session = onnx_session(onnx_model(model_dir, batch, workdir), threads)
    pixels = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    return median_ms(lambda: session.run(None, {"pixel_values": pixels}), iters)


def reduced_forwards(precision, model_dir, pixels, threads, workdir):
    """Each reference engine's forward at `precision` on `pixels` (numpy f32): name → a function
    returning last_hidden_state as numpy f32, or → the reason it cannot run here."""
    import torch

    forwards = {}
    if precision == "bf16":
        model = torch_model(model_dir, "sdpa").to(torch.bfloat16)
        bf16_pixels = torch.from_numpy(pixels).to(torch.bfloat16)
        forwards["torch bf16"] = lambda: model(pixel_values=bf16_pixels).last_hidden_state.float().numpy()
        f32_model, f32_pixels = torch_model(model_dir, "sdpa"), torch.from_numpy(pixels)

        def autocast():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return f32_model(pixel_values=f32_pixels).last_hidden_state.float().numpy()

        forwards["torch autocast bf16"] = autocast
    elif precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        onnx_path = onnx_model(model_dir, pixels.shape[0], workdir)
        for name, per_channel in [("onnxruntime int8", False), ("onnxruntime int8 per-channel", True)]:
            quantized = Path(workdir) / f"{onnx_path.stem}_int8{'_pc' if per_channel else ''}.onnx"
            quantize_dynamic(str(onnx_path), str(quantized), weight_type=QuantType.QInt8, per_channel=per_channel)
            session = onnx_session(quantized, threads)
            forwards[name] = lambda s=session: s.run(None, {"pixel_values": pixels})[0]
        try:
            model = torch.ao.quantization.quantize_dynamic(torch_model(model_dir, "sdpa"), {torch.nn.Linear},
                                                           dtype=torch.qint8)
            torch_pixels = torch.from_numpy(pixels)
            forwards["torch dynamic int8"] = lambda: model(pixel_values=torch_pixels).last_hidden_state.numpy()
            with torch.inference_mode():
                forwards["torch dynamic int8"]()
        except Exception as e:  # noqa: BLE001 - any failure means this torch cannot run it here
            forwards["torch dynamic int8"] = f"{type(e).__name__}: {e}".splitlines()[0]
    return forwards


def accuracy(output, reference):
    """How close `output`'s CLS embeddings (last_hidden_state[:, 0]) are to `reference`'s: the
    worst image's cosine, and max|cls − reference cls| / max|reference cls| over the batch."""
    import numpy as np

    cls, ref = output[:, 0].astype(np.float64), reference[:, 0].astype(np.float64)
    cos = (cls * ref).sum(axis=1) / (np.linalg.norm(cls, axis=1) * np.linalg.norm(ref, axis=1))
    return float(cos.min()), float(np.abs(cls - ref).max() / np.abs(ref).max())


def measure_reduced(args, model_dir, batch, iters, workdir):
    """One model and batch at args.precision: vitmsn (and vitmsn f32 beside it) and the reference
    engines' ms per forward, and each reduced-precision engine's CLS accuracy against transformers'
    f32 eager output on the same input."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    pixels = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    with torch.inference_mode():
        reference = torch_model(model_dir, "eager")(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    ms, cos, err, skipped = {}, {}, {}, {}
    ours = f"vitmsn {args.precision}"
    if args.skip_vitmsn:
        skipped[ours] = "--skip-vitmsn"
    else:
        ms["vitmsn f32"] = time_vitmsn(args, model_dir, batch, iters)
        ms[ours] = time_vitmsn(args, model_dir, batch, iters, args.precision)
        cos[ours], err[ours] = accuracy(vitmsn_output(args, model_dir, pixels, args.precision, workdir), reference)
    for name, forward in reduced_forwards(args.precision, model_dir, pixels, args.threads, workdir).items():
        if isinstance(forward, str):
            skipped[name] = forward
            print(f"{name}: skipped ({forward})", file=sys.stderr)
            continue
        with torch.inference_mode():
            cos[name], err[name] = accuracy(forward(), reference)
            ms[name] = median_ms(forward, iters)
    return {"ms": ms, "cos": cos, "max_rel_err": err, "skipped": skipped}


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
    parser.add_argument("--precision", choices=["f32", "bf16", "int8"], default="f32",
                        help="bf16 or int8: vitmsn at that precision beside the other engines' reduced-precision "
                             "modes, with each one's CLS accuracy against transformers' f32 output")
    parser.add_argument("--vitmsn", type=Path, default=ROOT / "target" / "release" / "vitmsn",
                        help="the vitmsn executable")
    parser.add_argument("--skip-vitmsn", action="store_true", help="time the other engines only")
    parser.add_argument("--out", help="the report [default: docs/benchmarks.md, or docs/benchmarks-PRECISION.md]")
    parser.add_argument("--peak", type=float, help="this machine's FMA peak in GFLOP/s for --threads threads")
    parser.add_argument("--peak-note", default="", help="how --peak was measured, for the report")
    parser.add_argument("--rows", help="where the measured rows are saved (with --render-only: read) "
                                       "[default: docs/benchmarks.json, or docs/benchmarks-PRECISION.json]")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the report from the saved rows (e.g. with a corrected --peak) without measuring")
    args = parser.parse_args()
    stem = "benchmarks" if args.precision == "f32" else f"benchmarks-{args.precision}"
    args.out = args.out or str(ROOT / "docs" / f"{stem}.md")
    args.rows = args.rows or str(ROOT / "docs" / f"{stem}.json")
    if args.isa == "avx2":
        # Read when torch loads its libraries, so set before the first import.
        os.environ.update(MKL_ENABLE_INSTRUCTIONS="AVX2", ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")

    import onnxruntime
    import torch
    import transformers

    if args.render_only:
        saved = json.loads(Path(args.rows).read_text())
        rows, versions, header = saved["rows"], saved["versions"], saved["header"]
    else:
        rows = measure(args)
        versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                    "onnxruntime": onnxruntime.__version__}
        header = {"cpu": cpu_name(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
                  "threads": args.threads, "iters": args.iters, "backend": args.backend, "isa": args.isa,
                  "precision": args.precision}
        Path(args.rows).write_text(json.dumps({"rows": rows, "versions": versions, "header": header}, indent=1))
    # The f32 FMA peak says nothing of bf16 or int8 engines: those get a fraction only of a given --peak.
    f32 = header.get("precision", "f32") == "f32"
    peak = args.peak or (ZEN3_PEAK_GFLOPS.get(args.threads) if f32 else None)
    peak_note = args.peak_note or ("the Zen 3 reference machine's FMA peak" if f32 else "--peak")
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
            row = {"arch": arch, "batch": batch, "iters": iters, "gflop": gflop}
            if args.precision == "f32":
                row["ms"] = {} if args.skip_vitmsn else {"vitmsn": time_vitmsn(args, model_dir, batch, iters)}
                row["ms"] |= {
                    "torch eager": time_torch(model_dir, batch, args.threads, iters, "eager"),
                    "torch sdpa": time_torch(model_dir, batch, args.threads, iters, "sdpa"),
                    "onnxruntime": time_onnxruntime(model_dir, batch, args.threads, iters, model_dir),
                }
            else:
                row |= measure_reduced(args, model_dir, batch, iters, model_dir)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def render(args, rows, versions, header, peak, peak_note):
    precision = header.get("precision", "f32")
    if precision == "f32":
        ours, compared, accurate = "vitmsn", ["onnxruntime", "torch sdpa"], []
        engines = ["vitmsn", "onnxruntime", "torch sdpa", "torch eager"]
    else:
        ours, *compared = accurate = REDUCED_ENGINES[precision]
        engines = [ours, "vitmsn f32", *compared]
    isa = f" --isa {header['isa']}" if header.get("isa") else ""
    flags = f"--threads {header['threads']} --iters {header['iters']}"
    versions_text = (f"torch {versions['torch']} with transformers {versions['transformers']}, "
                     f"onnxruntime {versions['onnxruntime']}")
    peak_text = (f" (fraction of {peak_note}: {peak:.0f} GFLOP/s for {header['threads']} threads)"
                 if peak else "")
    if precision == "f32":
        intro = (
            f"Measured by `tools/compare.py {flags}` in one run on "
            f"{header['cpu']} ({header['cores']} vCPUs), {header['date']}: "
            f"vitmsn `--backend {header['backend']}{isa}`, "
            f"{'PyTorch capped at AVX2, ONNX Runtime not (it has no switch), ' if header.get('isa') == 'avx2' else ''}"
            f"{versions_text}. Same random weights (224×224, `save_pretrained`) for all; "
            f"median of the iters column's forwards after one warm-up. ms per image{peak_text}." if peak else ""
        )
    else:
        modes = {
            "bf16": "PyTorch (sdpa attention) on the model cast to bfloat16 with bfloat16 inputs, and on the f32 "
                    "model under `torch.autocast(\"cpu\", dtype=torch.bfloat16)`",
            "int8": "ONNX Runtime on the exported model after `quantize_dynamic` (QInt8 weights, per tensor and "
                    "`per_channel=True`), and PyTorch after `torch.ao.quantization.quantize_dynamic` of its "
                    "`nn.Linear`s (qint8)",
        }[precision]
        intro = (
            f"Measured by `tools/compare.py --precision {precision} {flags}` in one run on "
            f"{header['cpu']} ({header['cores']} vCPUs), {header['date']}: vitmsn `--backend {header['backend']}"
            f"{isa} --precision {precision}` (and at f32, for its own speed-up); {modes}; {versions_text}. "
            f"Same random weights (224×224, `save_pretrained`) and the same input (seed 0) for all; median of "
            f"the iters column's forwards after one warm-up; ms per image{peak_text}. Accuracy against "
            f"transformers' f32 eager output on that input, of the CLS embedding (`last_hidden_state[:, 0]`): "
            f"the worst image's cosine / max|CLS − f32 CLS| ÷ max|f32 CLS|."
        )
    lines = [
        "# Benchmarks" + ("" if precision == "f32" else f": {precision}"),
        "",
        intro,
        "",
        "| model | batch | iters | GFLOP/image | " + " | ".join(engines) + " | "
        + " | ".join(f"{ours} vs {engine}" for engine in compared) + " |"
        + "".join(f" {engine} cos / err |" for engine in accurate),
        "|---|---|---|---|" + "---|" * (len(engines) + len(compared) + len(accurate)),
    ]
    for row in rows:
        ms = row["ms"]
        cells = []
        for engine in engines:
            if engine not in ms:
                cells.append("–")
                continue
            per_image = ms[engine] / row["batch"]
            frac = f" ({row['gflop'] / per_image * 1e3 / peak:.0%})" if peak else ""
            cells.append(f"{per_image:.1f}{frac}")
        cells += [f"{ms[engine] / ms[ours]:.2f}×" if engine in ms and ours in ms else "–" for engine in compared]
        cells += [f"{row['cos'][engine]:.5f} / {row['max_rel_err'][engine]:.1e}" if engine in row["cos"] else "–"
                  for engine in accurate]
        lines.append(f"| {row['arch']} | {row['batch']} | {row['iters']} | {row['gflop']:.1f} | "
                     + " | ".join(cells) + " |")
    skipped = {engine: why for row in rows for engine, why in row.get("skipped", {}).items()}
    lines += [""] + [f"- {engine}: not measured ({why})." for engine, why in skipped.items()]
    lines += ([""] if skipped else []) + [f"![ms per image]({Path(args.out).with_suffix('.png').name})", ""]
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
        values = [r["ms"].get(engine, float("nan")) / r["batch"] for r in rows]
        ax.bar([x + i * width for x in range(len(rows))], values, width, label=engine)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(rows))], labels, fontsize=8)
    ax.set_ylabel("ms per image (lower is better)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
