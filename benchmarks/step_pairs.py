"""trainkit's training loop against the best hand-written loop in short turns: 50-step chunks of each, alternating,
so the VM's drift (±30% between epochs) cancels within a pair. Prints the per-step medians and the paired ratio.

    .venv/bin/python benchmarks/step_pairs.py --rounds 80            # the loop as shipped
    .venv/bin/python benchmarks/step_pairs.py --rounds 70 --prep     # + variants of the batch normalization

MNIST MLP 784-500-10, batch 128, fused Adam on both sides, trainkit with progress bar and TensorBoard off (the
`overhead` section of run.py measures those)."""

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
    parser.add_argument("--prep", action="store_true", help="also: scalar affine, no normalization, addcmul")
    args = parser.parse_args()
    args.trainkit_overrides = []
    from trainkit.engine import loop
    from trainkit.models.mlp import MLP

    overrides = [*bench.mnist_overrides(args), "model=mlp", "optimizer=adam", "scheduler=none", "data.batch_size=128",
                 f"trainer.num_threads={torch.get_num_threads()}", "trainer.progress=none", "trainer.tensorboard=false"]
    run = bench.TrainkitRun(overrides, Path(tempfile.mkdtemp(prefix="trainkit-pairs-")))
    run.settings.limit_train_batches = args.chunk
    meta, train = run.built.data.meta, run.built.data.train
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
        run.state.batch = 0
        start = time.perf_counter()
        loop._train_epoch(run.task, run.loaders["train"], run.opt, run.logger, run.settings, run.state, run.hooks)
        return time.perf_counter() - start

    contenders = {"hand-written": handwritten, "trainkit": trainkit}
    if args.prep:
        loader = run.loaders["train"]
        a, b = loader._affine
        af, bf = float(a.flatten()[0]), float(b.flatten()[0])
        preps = {"scalar affine": lambda t, g: t.to(torch.float32, copy=True).mul_(af).add_(bf),
                 "no normalization": lambda t, g: t.to(torch.float32),
                 "addcmul": lambda t, g: torch.addcmul(b, t, a)}

        def with_prep(fn):
            def go() -> float:
                loader._prepare = fn
                try:
                    return trainkit()
                finally:
                    del loader._prepare
            return go
        contenders.update({f"trainkit, {k}": with_prep(f) for k, f in preps.items()})
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(args.rounds):
        for name, fn in (contenders.items() if r % 2 else reversed(contenders.items())):
            times[name].append(fn())
    base = times["hand-written"]
    print(f"hand-written (fused Adam): {statistics.median(base) / args.chunk * 1e6:,.0f} µs/step")
    for name, t in times.items():
        if name != "hand-written":
            paired = statistics.median([h / k for h, k in zip(base, t)])
            print(f"{name}: {statistics.median(t) / args.chunk * 1e6:,.0f} µs/step; hand-written / it, paired: "
                  f"{paired:.3f}")


if __name__ == "__main__":
    main()
