#!/usr/bin/env python3
"""Sums up a tools/gpu_check.sh run folder: adapters, vitmsn bench beside PyTorch, GEMM
rates against the fp32 SIMT peak, and the issue's goals. Plain Python, no packages.

    python3 tools/gpu_check_summary.py DIR [--peak-f32 TFLOPS]
"""

import argparse
import json
import os


def rows(path):
    """The JSON objects of a .jsonl file; lines that are not JSON are skipped."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--peak-f32", type=float, default=67.0,
                   help="fp32 SIMT peak in TFLOP/s (H200/H100 SXM datasheet: about 67)")
    args = p.parse_args()
    d = args.dir

    for a in rows(os.path.join(d, "adapters.jsonl")):
        if "name" in a:
            print(f"adapter: {a['name']} ({a['backend']}, {a['device_type']}, driver {a['driver']} "
                  f"{a['driver_info']}) shader_f16={a['shader_f16']} subgroup={a['subgroup']} "
                  f"subgroup_size={a['subgroup_size']}")
        elif "vitmsn_backend" in a:
            print(f"vitmsn --backend gpu {a['vitmsn_backend']}: "
                  + ("opens " + str(a.get("preferred_adapter")) if a["opens"] else f"fails: {a['error']}"))
        elif a.get("adapters") == 0:
            print("adapter: none found")

    bench = {}
    for r in rows(os.path.join(d, "bench.jsonl")):
        key = (r.get("model"), r.get("batch"), r.get("precision"))
        bench[key] = r
        print(f"vitmsn {key[0]} b{key[1]} {key[2]}: {r['median_ms']:.2f} ms, "
              f"{r['images_per_s']:.3g} img/s, {r['gflop_per_s'] / 1e3:.3g} TFLOP/s")

    torch = {}
    for r in rows(os.path.join(d, "torch.jsonl")):
        if "note" in r or ("error" in r and "engine" not in r):
            print(f"torch: {r.get('note') or r.get('error')}")
        elif r.get("engine") == "torch":
            key = (r["model"], r["batch"], r["precision"])
            if "images_per_s" in r:
                torch[key] = r
                print(f"torch {key[0]} b{key[1]} {key[2]}: {r['median_ms']:.2f} ms, "
                      f"{r['images_per_s']:.3g} img/s, {r['tflop_per_s']:.3g} TFLOP/s")
            else:
                print(f"torch {key[0]} b{key[1]} {key[2]}: {r.get('error') or r.get('skipped')}")
        elif "torch" in r:
            print(f"torch: {r['torch']} on {r.get('device')}, transformers {r.get('transformers')}, "
                  f"tf32 {r.get('tf32_matmul')}")

    for key in sorted(set(bench) & set(torch), key=str):
        ratio = bench[key]["images_per_s"] / torch[key]["images_per_s"]
        line = f"vitmsn / torch {key[0]} b{key[1]} {key[2]}: {ratio:.3g}x images/s"
        with_copies = torch[key].get("median_ms_with_host_copies")
        if with_copies:
            # vitmsn bench's forwards include the host copies; torch's first figure does not.
            line += f" ({bench[key]['images_per_s'] * with_copies / 1e3 / key[1]:.3g}x against torch with host copies)"
        print(line)

    for r in rows(os.path.join(d, "gemm.jsonl")) + [
        r for r in rows(os.path.join(d, "torch.jsonl")) if r.get("engine") == "torch-gemm"
    ]:
        who = "torch F.linear" if r.get("engine") == "torch-gemm" else "vitmsn gemm"
        if "tflop_per_s" in r:
            share = f" ({r['tflop_per_s'] / args.peak_f32:.0%} of fp32 peak)" if r["precision"] == "f32" else ""
            print(f"{who} {r['arch']} b{r['batch']} {r['layer']} {r['precision']} "
                  f"{r['m']}x{r['n']}x{r['k']}: {r['tflop_per_s']:.3g} TFLOP/s{share}")
        elif "precision" in r:
            print(f"{who} {r.get('arch')} b{r.get('batch')} {r.get('layer')} {r['precision']}: "
                  f"{r.get('error') or r.get('skipped')}")

    print("--- goals")
    f32_gemm = [r["tflop_per_s"] for r in rows(os.path.join(d, "gemm.jsonl"))
                if r.get("precision") == "f32" and "tflop_per_s" in r]
    if f32_gemm:
        best = max(f32_gemm)
        print(f"f32 GEMM >= 40% of the {args.peak_f32:g} TFLOP/s fp32 peak: best {best:.3g} TFLOP/s "
              f"({best / args.peak_f32:.0%}) -> {'met' if best >= 0.4 * args.peak_f32 else 'not met'}")
    else:
        print("f32 GEMM: no measurement")
    key = ("vit-msn-base", 64, "f32")
    if key in bench and key in torch:
        ratio = bench[key]["images_per_s"] / torch[key]["images_per_s"]
        print(f"vit-msn-base b64 f32 >= half of PyTorch fp32 (TF32 off): {ratio:.2f}x -> "
              f"{'met' if ratio >= 0.5 else 'not met'}")
    else:
        print("vit-msn-base b64 f32 against PyTorch: not both measured")


if __name__ == "__main__":
    main()
