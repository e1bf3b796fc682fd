"""trainkit's training loop against the best hand-written loop in short turns: 50-step chunks of each, alternating,
so the VM's drift (±30% between epochs) cancels within a pair. Prints the per-step medians and the paired ratio.

    .venv/bin/python benchmarks/step_pairs.py --rounds 80

MNIST MLP 784-500-10, batch 128, fused Adam on both sides, trainkit with progress bar and TensorBoard off (the
`overhead` section of run.py measures those). trainkit's turn is one "epoch" of its real `Trainer` cut to the chunk
(`trainer.limit_train_batches`), timed by the loop's own `time/epoch_s` (the training steps, from the epoch's
start to its metrics' host copy): its one-batch validation and the checkpoint afterwards are outside the timer.
The hand-written turn is timed around `handwritten.indexed_epoch`, permutation included.

An earlier version also swapped the loader's batch normalization for variants (`--prep`); that replaced a trainkit
function at run time and is gone (its figures stay in benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import handwritten as hw  # noqa: E402
import run as bench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-csv", type=Path, default=Path("/tmp/mnist_csv"))
    parser.add_argument("--rounds", type=int, default=80)
    parser.add_argument("--chunk", type=int, default=50, help="steps per turn")
    args = parser.parse_args()
    args.mnist_csv = args.mnist_csv.resolve()
    args.trainkit_overrides = []
    from trainkit.models.mlp import MLP

    overrides = [*bench.mnist_overrides(args), "model=mlp", "optimizer=adam", "scheduler=none", "data.batch_size=128",
                 f"trainer.num_threads={torch.get_num_threads()}", "trainer.progress=none", "trainer.tensorboard=false",
                 f"trainer.limit_train_batches={args.chunk}", "trainer.limit_eval_batches=1", "trainer.device=cpu"]
    run = bench.TrainkitRun(overrides, Path(tempfile.mkdtemp(prefix="trainkit-pairs-")))
    meta, train = run.data.meta, run.data.train
    x, y = hw.normalized(train.x, meta.mean, meta.std), train.y
    torch.manual_seed(0)
    net = MLP(meta.in_shape, meta.num_outputs, hidden=[500])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    gen = torch.Generator().manual_seed(0)

    def handwritten() -> float:
        start = time.perf_counter()
        hw.indexed_epoch(net, opt, x, y, 128, gen, max_batches=args.chunk)
        return time.perf_counter() - start

    def trainkit() -> float:
        return run.epoch()["train_s"]

    contenders = {"hand-written": handwritten, "trainkit": trainkit}
    trainkit(), handwritten()  # warm-up: allocators, oneDNN kernels, the first epoch's input picture
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(args.rounds):
        for name, fn in (contenders.items() if r % 2 else reversed(contenders.items())):
            times[name].append(fn())
    run.close()
    base = times["hand-written"]
    print(f"hand-written (fused Adam): {statistics.median(base) / args.chunk * 1e6:,.0f} µs/step")
    for name, t in times.items():
        if name != "hand-written":
            paired = statistics.median([h / k for h, k in zip(base, t)])
            print(f"{name}: {statistics.median(t) / args.chunk * 1e6:,.0f} µs/step; hand-written / it, paired: "
                  f"{paired:.3f}")


if __name__ == "__main__":
    main()
