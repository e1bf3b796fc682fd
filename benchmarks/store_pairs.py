"""Training from the sample store against training from memory, in short alternating turns against one hand-written
loop, so the VM's drift cancels within a round. Prints, per case, each contender's median per-step time and the
paired ratios (median and spread over rounds), and writes benchmarks/results/store_pairs.json.

    .venv/bin/python benchmarks/store_pairs.py --mnist-csv /tmp/mnist_csv --cifar-root ../shared/data/cifar10

Both trainkit contenders are its real `Trainer` as `trainkit train` builds it (benchmarks/run.py's TrainkitRun), one
epoch cut to `--chunk` steps per turn, timed by its own `time/epoch_s`: `data.cache=true` reads batches from the
memory-mapped store (warm: in the page cache), `data.cache=false` from the reader's arrays in the process's memory,
as before the store. The hand-written turn is `handwritten.indexed_epoch` on the same model, the split normalized
in memory once. Cases: MNIST MLP (mnist_mlp's model, batch 128, Adam) and CIFAR-10 fast_resnet (experiment=
cifar10_fast, batch 128 as the preset, augmentation on).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import handwritten as hw  # noqa: E402
import run as bench  # noqa: E402


def case(name: str, overrides: list[str], rounds: int, chunk: int) -> dict:
    common = [*overrides, f"trainer.num_threads={torch.get_num_threads()}", "trainer.progress=none",
              "trainer.tensorboard=false", f"trainer.limit_train_batches={chunk}", "trainer.limit_eval_batches=1",
              "trainer.device=cpu"]
    runs = {"store": bench.TrainkitRun([*common, "data.cache=true"], Path(tempfile.mkdtemp(prefix="tk-store-"))),
            "memory": bench.TrainkitRun([*common, "data.cache=false"], Path(tempfile.mkdtemp(prefix="tk-memory-")))}
    from trainkit.data.cache import file_backed

    backed = {k: file_backed(r.loaders["train"].x) for k, r in runs.items()}
    assert backed == {"store": True, "memory": False}, backed  # what each contender is meant to read from
    data = runs["memory"].data
    x, y = hw.normalized(data.train.x, data.meta.mean, data.meta.std), data.train.y
    net = copy.deepcopy(runs["memory"].task.modules()["net"])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    batch = runs["memory"].loaders["train"].batch_size

    def handwritten() -> float:
        start = time.perf_counter()
        hw.indexed_epoch(net, opt, x, y, batch, gen, max_batches=chunk)
        return time.perf_counter() - start

    contenders = {"hand-written": handwritten, **{k: (lambda r=r: r.epoch()["train_s"]) for k, r in runs.items()}}
    for fn in contenders.values():
        fn()  # warm-up: allocators, oneDNN kernels, the store's pages into the page cache
    times: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    for r in range(rounds):
        for k in names[r % 3:] + names[:r % 3]:  # each contender goes first, second and third in turn
            times[k].append(contenders[k]())
    for run in runs.values():
        run.close()
    result = {"case": name, "rounds": rounds, "steps_per_turn": chunk,
              "us_per_step": {k: statistics.median(t) / chunk * 1e6 for k, t in times.items()}}
    for a, b in (("store", "memory"), ("store", "hand-written"), ("memory", "hand-written")):
        ratios = sorted(ta / tb for ta, tb in zip(times[a], times[b]))
        result[f"{a}/{b}"] = {"median": statistics.median(ratios), "p10": ratios[len(ratios) // 10],
                              "p90": ratios[(9 * len(ratios)) // 10]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-csv", type=Path, default=Path("/tmp/mnist_csv"))
    parser.add_argument("--cifar-root", type=Path, default=bench.ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--chunk", type=int, default=40, help="steps per turn (CIFAR-10: a quarter of it)")
    parser.add_argument("--only", default="mnist,cifar10")
    parser.add_argument("--out", type=Path, default=bench.RESULTS / "store_pairs.json")
    args = parser.parse_args()
    results = []
    if "mnist" in args.only:
        args.mnist_csv, args.trainkit_overrides = args.mnist_csv.resolve(), []
        results.append(case("MNIST MLP", [*bench.mnist_overrides(args), "model=mlp", "optimizer=adam", "scheduler=none",
                                          "data.batch_size=128"], args.rounds, args.chunk))
    if "cifar10" in args.only:
        results.append(case("CIFAR-10 fast_resnet", ["experiment=cifar10_fast", f"data.root={args.cifar_root.resolve()}",
                                                     "data.test_fraction=0.2"],
                            args.rounds, max(1, args.chunk // 4)))
    for r in results:
        us = ", ".join(f"{k} {v:,.0f} µs" for k, v in r["us_per_step"].items())
        ratio = lambda k: f"{r[k]['median']:.3f} ({r[k]['p10']:.3f}–{r[k]['p90']:.3f})"  # noqa: E731
        print(f"{r['case']}: per step {us}; store/memory {ratio('store/memory')}, store/hand-written "
              f"{ratio('store/hand-written')}, memory/hand-written {ratio('memory/hand-written')} "
              f"[{r['rounds']} rounds of {r['steps_per_turn']} steps]")
    args.out.write_text(json.dumps({"machine": bench.machine(), "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
