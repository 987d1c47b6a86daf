#!/usr/bin/env python3
"""Embeds a folder of images (or a list of paths) with vitmsn on a Ray cluster, with Ray
Data, and writes the embeddings as Parquet (a folder of files, one table to
`pandas.read_parquet`): one row per image, columns `path` (str) and
`embedding` (a fixed-size list of float32).

Each worker is a stateful `Embedder` that loads the checkpoint once and then embeds the
batches it is given; `--workers` of them run at once, each with `--threads` CPU threads.
The image paths and the checkpoint folder must be readable at the same place on every
node (a shared or replicated filesystem).

    # on one machine: starts a local Ray instance
    python examples/ray_embed.py photos/ --model vit-msn-small --output emb-parquet --workers 2

    # on a cluster: `ray start --head` on one node, `ray start --address HEAD:6379` on the
    # others, then from any node
    python examples/ray_embed.py /shared/photos --model /shared/vit-msn-small \\
        --output /shared/emb-parquet --address auto --workers 8 --threads 4

Prints one JSON line with the images embedded, the workers and images per second.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import pyarrow as pa
import ray
import vitmsn

FEATURE_COLUMNS = {"cls": "cls_embeddings", "cls_prenorm": "cls_prenorm_embeddings", "mean": "mean_embeddings"}


class Embedder:
    """One Ray worker: the checkpoint, loaded once, embedding batches of paths."""

    def __init__(self, model: str, feature: str, threads: int) -> None:
        self.model = vitmsn.ViTMSN(model, threads=threads)
        self.feature = feature

    def __call__(self, batch: dict) -> pa.Table:
        paths = [str(p) for p in batch["path"]]
        embeddings = self.model.embed(paths, features=(self.feature,))[FEATURE_COLUMNS[self.feature]]
        rows, width = embeddings.shape
        flat = pa.array(embeddings.reshape(-1), type=pa.float32())
        return pa.table(
            {"path": pa.array(paths, type=pa.string()), "embedding": pa.FixedSizeListArray.from_arrays(flat, width)}
        )


def embed(
    paths: list,
    model: str,
    output: str,
    workers: int,
    threads: int,
    batch_size: int,
    feature: str = "cls",
) -> float:
    """Embeds `paths` on the connected Ray cluster and writes `output` (a folder of
    Parquet files, which `pandas.read_parquet` reads as one table); returns the seconds
    from the first batch scheduled to the files written."""
    dataset = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, len(paths) // batch_size))
    start = time.perf_counter()
    embedded = dataset.map_batches(
        Embedder,
        fn_constructor_kwargs={"model": os.path.abspath(model), "feature": feature, "threads": threads},
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=workers,
        num_cpus=threads,
    )
    # The workers write their blocks themselves: a folder of Parquet files.
    embedded.write_parquet(output)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files or folders (walked as `vitmsn embed` walks them)")
    parser.add_argument("--model", required=True, help="a save_pretrained checkpoint folder")
    parser.add_argument("--output", required=True, help="the folder of Parquet files to write")
    parser.add_argument("--address", help="a running cluster (`auto`, or HEAD:6379); default: start a local one")
    parser.add_argument("--workers", type=int, default=2, help="embedders running at once (default 2)")
    parser.add_argument("--threads", type=int, help="CPU threads (and Ray CPUs) per worker; default: the cores / workers")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    parser.add_argument("--feature", choices=sorted(FEATURE_COLUMNS), default="cls")
    args = parser.parse_args()

    threads = args.threads or max(1, len(os.sched_getaffinity(0)) // args.workers)
    if args.address:
        ray.init(address=args.address)
    else:
        ray.init(num_cpus=max(threads * args.workers, len(os.sched_getaffinity(0))))
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    paths = vitmsn.collect_images(args.images)
    seconds = embed(paths, args.model, args.output, args.workers, threads, args.batch_size, args.feature)
    print(
        json.dumps(
            {
                "images": len(paths),
                "workers": args.workers,
                "threads_per_worker": threads,
                "seconds": round(seconds, 3),
                "images_per_s": round(len(paths) / seconds, 2),
                "output": args.output,
            }
        )
    )


if __name__ == "__main__":
    main()
