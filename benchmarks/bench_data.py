"""Data benchmarks on real MNIST: CSV load times (pandas vs trainkit cold vs cached) and loader epoch throughput.

    .venv/bin/python benchmarks/bench_data.py --mnist ../shared/data/mnist
builds a 60,000-row Kaggle-layout CSV in a temp dir from the IDX files, measures everything in one run (medians,
runs interleaved so that a busy machine slows every contender alike), prints a markdown table and writes
benchmarks/results/data.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainkit.data import cache, mnist_csv
from trainkit.data.loader import BatchLoader
from trainkit.data.prepare import PIXEL_NAMES, find_idx, read_idx, write_csv
from trainkit.models.mlp import MLP

RESULTS = Path(__file__).resolve().parent / "results" / "data.json"


def build_csv(mnist: Path, folder: Path) -> Path:
    files = find_idx(mnist)
    images, labels = read_idx(files["train_images"], 3), read_idx(files["train_labels"], 1)
    path = folder / "train.csv"
    write_csv(path, np.column_stack([labels, images.reshape(len(images), -1)]), ["label", *PIXEL_NAMES], "kaggle")
    return path


def timed(fn: Callable[[], object]) -> float:
    gc.collect()  # the previous contender's garbage is freed before the clock starts, not during
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def load_times(path: Path, repeats: int) -> dict[str, list[float]]:
    """Each repeat runs every contender once, starting with a different one each time (whoever runs just
    after pandas pays for the pages it gave back)."""
    import pandas as pd

    cache_dir = path.parent / cache.FOLDER
    times: dict[str, list[float]] = {"pandas": [], "cold_no_cache": [], "cold": [], "cached": []}

    def cold_then_cached() -> None:
        shutil.rmtree(cache_dir, ignore_errors=True)
        times["cold"].append(timed(lambda: mnist_csv.read_split(str(path))))  # parse, check, write the cache
        times["cached"].append(timed(lambda: mnist_csv.read_split(str(path))))

    contenders = [
        lambda: times["pandas"].append(timed(lambda: pd.read_csv(path))),
        lambda: times["cold_no_cache"].append(timed(lambda: mnist_csv.read_split(str(path), cache=False))),
        cold_then_cached,
    ]
    for r in range(repeats):
        for k in range(len(contenders)):
            contenders[(r + k) % len(contenders)]()
    return times


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, batches: Iterable) -> int:
    seen = 0
    for x, y in batches:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
    return seen


def loader_throughput(path: Path, epochs: int, batch_size: int, threads: int) -> dict[str, list[float]]:
    """Samples/s of one training epoch (MLP 784-500-10, Adam) fed by each loader, and of the loaders alone."""
    torch.set_num_threads(threads)
    data = mnist_csv.load(str(path), val_fraction=0.1, seed=0)
    meta, train = data.meta, data.train
    ours = BatchLoader(train, meta, batch_size, torch.device("cpu"), shuffle=True, seed=0)
    mean, std = meta.mean[0], meta.std[0]
    dataset = torch.utils.data.TensorDataset((train.x.float() / 255 - mean) / std, train.y)
    theirs = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    out: dict[str, list[float]] = {"batchloader_train": [], "dataloader_train": [], "batchloader_iterate": [],
                                   "dataloader_iterate": []}
    models = {name: MLP(meta.in_shape, meta.num_outputs, hidden=[500]) for name in ("batchloader", "dataloader")}
    opts = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in models.items()}
    for epoch in range(epochs):
        ours.set_epoch(epoch)
        for name, loader in (("batchloader", ours), ("dataloader", theirs)):
            start = time.perf_counter()
            seen = train_epoch(models[name], opts[name], loader)
            out[f"{name}_train"].append(seen / (time.perf_counter() - start))
            start = time.perf_counter()
            seen = sum(len(y) for _, y in loader)
            out[f"{name}_iterate"].append(seen / (time.perf_counter() - start))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", type=Path, required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--repeats", type=int, default=5, help="load timings per contender (median reported)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per loader (median reported)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()],
                        help="torch CPU threads to measure the loaders with (each in turn)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="trainkit-bench-") as tmp:
        path = build_csv(args.mnist, Path(tmp))
        loads = load_times(path, args.repeats)
        speeds = {t: loader_throughput(path, args.epochs, args.batch_size, t) for t in dict.fromkeys(args.threads)}
    load_med = {k: statistics.median(v) for k, v in loads.items()}
    result = {
        "csv": {"rows": 60000, "layout": "kaggle", "seconds": loads, "median_s": load_med,
                "pandas_over_cold": load_med["pandas"] / load_med["cold"],
                "pandas_over_cold_no_cache": load_med["pandas"] / load_med["cold_no_cache"],
                "cached_over_pandas": load_med["cached"] / load_med["pandas"]},
        "loader": {"batch_size": args.batch_size, "model": "mlp 784-500-10, adam",
                   "by_threads": {str(t): _loader_summary(s) for t, s in speeds.items()}},
        "machine": {"cpus": os.cpu_count(), "load_avg": load_before, "load_avg_after": os.getloadavg(),
                    "python": platform.python_version(), "torch": torch.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"\nwritten to {args.out}")


def _loader_summary(speed: dict[str, list[float]]) -> dict:
    med = {k: statistics.median(v) for k, v in speed.items()}
    return {"samples_per_s": speed, "median_samples_per_s": med,
            "train_ratio": med["batchloader_train"] / med["dataloader_train"],
            "iterate_ratio": med["batchloader_iterate"] / med["dataloader_iterate"]}


def markdown(r: dict) -> str:
    c, lo = r["csv"], r["loader"]
    m = c["median_s"]
    lines = [
        f"60,000-row Kaggle-layout MNIST CSV, median of {len(c['seconds']['pandas'])} (load average "
        f"{r['machine']['load_avg'][0]:.1f} on {r['machine']['cpus']} cores)",
        "",
        "| load | seconds | vs pandas.read_csv |",
        "|---|---:|---:|",
        f"| plain `pandas.read_csv` | {m['pandas']:.3f} | 1.00× |",
        f"| trainkit cold (parse + checks), cache off | {m['cold_no_cache']:.3f} | "
        f"{c['pandas_over_cold_no_cache']:.2f}× faster |",
        f"| trainkit cold (parse + checks + writing the cache) | {m['cold']:.3f} | {c['pandas_over_cold']:.2f}× faster |",
        f"| trainkit cached (memory-mapped .npy) | {m['cached']:.4f} | {c['cached_over_pandas']:.4f} of its time |",
    ]
    for threads, summary in lo["by_threads"].items():
        s = summary["median_samples_per_s"]
        lines += [
            "",
            f"Epoch throughput at batch {lo['batch_size']}, {lo['model']}, {threads} torch thread(s), median of "
            f"{len(summary['samples_per_s']['batchloader_train'])} epochs:",
            "",
            "| loader | training samples/s | iterating alone, samples/s |",
            "|---|---:|---:|",
            f"| trainkit BatchLoader (uint8, normalized per batch) | {s['batchloader_train']:,.0f} | "
            f"{s['batchloader_iterate']:,.0f} |",
            f"| torch DataLoader over a TensorDataset (float, pre-normalized) | {s['dataloader_train']:,.0f} | "
            f"{s['dataloader_iterate']:,.0f} |",
            f"| BatchLoader / DataLoader | {summary['train_ratio']:.2f}× | {summary['iterate_ratio']:.2f}× |",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
