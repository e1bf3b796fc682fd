"""A whole mnist_fast (or cifar10_fast: --preset) run, from the process start to its last training step: trainkit
against the hand-written loop of the same recipe, in paired rounds of fresh processes, with trainkit's time split by phase.

    .venv/bin/python benchmarks/whole_run.py --mnist-csv /tmp/mnist_csv --rounds 5
    git worktree add /tmp/before HEAD~1 && .venv/bin/python benchmarks/whole_run.py --before /tmp/before   # + that tree
    .venv/bin/python benchmarks/whole_run.py --mnist-csv /tmp/mnist_csv --rounds 1 --quick   # checks the harness
    .venv/bin/python benchmarks/whole_run.py --preset cifar10_fast --epochs 2 --rounds 4   # cifar10_fast, shortened

Each round starts two processes, each going first in turn: `trainkit.train([experiment=mnist_fast ...])` (the command
line's own path, in process: checks, run directory, data check, checkpoints, validation each epoch, metrics.csv,
TensorBoard) and a plain script (import torch, np.load the same 54,000 training images, the same nn.Module, fused SGD
with Nesterov momentum, OneCycleLR, label smoothing, channels_last). Both are timed from just before the process is
started to the end of the last optimizer step (trainkit's test pass after it is not counted; nor is any test pass
of the script). trainkit's phases are those of trainkit.engine.profiling (data, step, backward, optimizer, logging,
validation, checkpoint) plus its start-up (process start to the first step) and the time to its first batch.
Writes benchmarks/results/whole_run.json and prints a markdown table; the load average is recorded per round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def overrides(args: argparse.Namespace) -> list[str]:
    extra = ["trainer.max_epochs=1", "trainer.limit_train_batches=30"] if args.quick else []
    if args.epochs and not args.quick:
        extra.append(f"trainer.max_epochs={args.epochs}")  # a shorter schedule: each epoch's parts at a lower cost
    if args.threads:
        extra.append(f"trainer.num_threads={args.threads}")
    if args.preset == "cifar10_fast":  # the copy in ../shared has no test batch: a fifth is held back, as fast_recipes
        data = [f"data.root={args.cifar_root}", "data.test_fraction=0.2"]
    else:
        data = [f"data.train_csv={args.mnist_csv / 'train.csv'}", f"data.test_csv={args.mnist_csv / 'test.csv'}"]
    return [f"experiment={args.preset}", *data, "trainer.progress=none", *extra]


# --------------------------------------------------------------------------------------------- child processes
def child_trainkit(out: Path, run_dir: Path, words: list[str]) -> None:
    import torch  # noqa: F401 (imported first on both sides: the same mark)

    imported = time.time()
    import trainkit
    from trainkit.engine import profiling
    from trainkit.trainer import Callback

    class LastStep(Callback):
        def __init__(self) -> None:
            self.marks: dict[str, float] = {"imported": imported, "trainkit_imported": time.time()}
            self.cpu: dict[str, float] = {}
            self.total = 0

        def on_fit_start(self, trainer: Any) -> None:
            self.marks["fit_start"] = time.time()
            self.cpu["fit_start"] = time.process_time()
            self.total = trainer.settings.max_epochs * len(trainer.data.train)
            if trainer.settings.limit_train_batches:
                self.total = trainer.settings.max_epochs * int(trainer.settings.limit_train_batches)

        def on_step_end(self, trainer: Any, step: int, metrics: Any) -> None:
            if step == 1:
                self.marks["first_step"] = time.time()
            if step == self.total:
                self.marks["last_step"] = time.time()
                self.cpu["last_step"] = time.process_time()
                self.phases = dict(times.seconds)  # a copy now: what follows (the test) is not counted

    last = LastStep()
    with profiling.recording(trace=False) as times:
        summary = trainkit.train([*words, f"hydra.run.dir={run_dir}"], callbacks=[last])
    out.write_text(json.dumps({"marks": last.marks, "cpu": last.cpu, "phases": last.phases, "test_acc": summary["test"]["test/acc"],
                               "steps": summary["steps"]}))


def child_handwritten(out: Path, data: Path, limit: int | None, threads: int | None) -> None:
    """The preset's recipe by hand (recipe.json, written from the composed config): the same nn.Module, fused SGD with
    Nesterov momentum, OneCycleLR, label smoothing, random shifts and flips where the preset has them, channels_last;
    the data normalized once, as a plain script does."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    sys.path.insert(0, str(HERE))
    from handwritten import augment

    from trainkit.models.fast_resnet import FastResNet

    marks = {"imported": time.time()}
    r = json.loads((data / "recipe.json").read_text())
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (r["mean"], r["std"]))
    x = (torch.from_numpy(np.load(data / "x.npy")).float().div_(r["scale"]) - mean) / std
    y = torch.from_numpy(np.load(data / "y.npy")).long()
    torch.manual_seed(0)
    fmt = torch.channels_last if r["channels_last"] else torch.contiguous_format
    model = FastResNet(tuple(r["in_shape"]), 10, **r["model"]).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=r["lr"], momentum=r["momentum"], nesterov=True,
                          weight_decay=r["weight_decay"], fused=True)
    batch = r["batch_size"]
    per_epoch = -(-len(x) // batch) if limit is None else limit
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], total_steps=r["epochs"] * per_epoch,
                                                pct_start=r["pct_start"], anneal_strategy="linear")
    g = torch.Generator().manual_seed(0)
    marks["ready"] = time.time()
    cpu = {"ready": time.process_time()}
    for _ in range(r["epochs"]):
        perm = torch.randperm(len(x), generator=g)
        for i in range(per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            xb = augment(x[idx], r["crop_padding"], r["hflip"], g).contiguous(memory_format=fmt)
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=r["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    marks["last_step"] = time.time()
    cpu["last_step"] = time.process_time()
    out.write_text(json.dumps({"marks": marks, "cpu": cpu}))


# --------------------------------------------------------------------------------------------------- the parent
def prepare(args: argparse.Namespace, tmp: Path) -> Path:
    """The training split trainkit trains on (its validation carve taken out), as .npy files for the script."""
    import numpy as np
    from hydra import compose, initialize_config_dir

    from trainkit.build import build_data, plain
    from trainkit.cli.compose import config_dir, register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides(args))
    data = build_data(plain(cfg))
    folder = tmp / "npy"
    folder.mkdir()
    np.save(folder / "x.npy", np.ascontiguousarray(data.train.x.numpy()))
    np.save(folder / "y.npy", data.train.y.numpy())
    augment = cfg.data.get("augment") or {}
    recipe = {"in_shape": list(data.meta.in_shape), "scale": data.meta.scale, "mean": list(data.meta.mean),
              "std": list(data.meta.std),
              "model": {k: (list(v) if k == "stages" else v) for k, v in cfg.model.items() if k in (
                  "width", "stages", "depth")},
              "lr": cfg.optimizer.lr, "momentum": cfg.optimizer.momentum, "weight_decay": cfg.optimizer.weight_decay,
              "pct_start": cfg.scheduler.pct_start, "label_smoothing": cfg.task.get("label_smoothing", 0.0),
              "batch_size": cfg.data.batch_size, "epochs": cfg.trainer.max_epochs,
              "crop_padding": augment.get("crop_padding", 0), "hflip": augment.get("hflip", False),
              "channels_last": cfg.trainer.channels_last}
    (folder / "recipe.json").write_text(json.dumps(recipe))
    return folder


def spawn(argv: list[str], tree: Path | None = None) -> float:
    """Start this script as a child (`tree`: with an earlier checkout's src/ first on the path) and wait for it;
    the time just before it was started."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")} if tree is not None else None
    start = time.time()
    subprocess.run([sys.executable, __file__, *argv], check=True, stdout=subprocess.DEVNULL, env=env)
    return start


def one_round(args: argparse.Namespace, tmp: Path, data: Path, k: int) -> dict[str, Any]:
    row: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    order = ["trainkit", "handwritten"] + (["before"] if args.before else [])
    order = order[k % len(order):] + order[:k % len(order)]  # each contender goes first in turn
    for who in order:
        out = tmp / f"{who}-{k}.json"
        if who == "handwritten":
            start = spawn(["--child", "handwritten", "--out", str(out), "--data", str(data),
                           *(["--limit", "30"] if args.quick else []),
                           *(["--threads", str(args.threads)] if args.threads else [])])
        else:
            start = spawn(["--child", "trainkit", "--out", str(out), "--run-dir", str(tmp / f"{who}{k}"),
                           "--", *overrides(args)], args.before if who == "before" else None)
        got = json.loads(out.read_text())
        got["seconds"] = {name: t - start for name, t in got["marks"].items()}
        row[who] = got
    for who in order:
        if who != "handwritten":
            row[f"ratio_{who}"] = row[who]["seconds"]["last_step"] / row["handwritten"]["seconds"]["last_step"]
    row["ratio"] = row["ratio_trainkit"]
    if args.before:
        row["after_over_before"] = row["trainkit"]["seconds"]["last_step"] / row["before"]["seconds"]["last_step"]
    row["load_after"] = os.getloadavg()[0]
    return row


def _spread(values: list[float]) -> str:
    values = sorted(values)
    return f"median {statistics.median(values):.3f} (min {values[0]:.3f}, max {values[-1]:.3f})"


def summary(rows: list[dict[str, Any]]) -> str:
    med = statistics.median
    who = [w for w in ("before", "trainkit") if w in rows[0]]
    lines = [f"{len(rows)} rounds, load {min(r['load_before'] for r in rows):.2f}-"
             f"{max(r['load_after'] for r in rows):.2f} (1-minute average before and after each round)", ""]
    for w in who:
        lines.append(f"- {w}/hand-written, process start to last step: {_spread([r['ratio_' + w] for r in rows])}")
    if "before" in rows[0]:
        lines.append(f"- trainkit now/before: {_spread([r['after_over_before'] for r in rows])}")
    lines += ["", "| part (median seconds) | " + " | ".join(who) + " | hand-written |",
              "|---|" + "---:|" * (len(who) + 1)]

    def row(label: str, get: Any, hw: Any = None) -> None:
        cells = [f"{med([get(r[w]) for r in rows]):.3f}" for w in who]
        hand = f"{med([hw(r['handwritten']) for r in rows]):.3f}" if hw else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {hand} |")

    row("process start to `import torch` done", lambda t: t["seconds"]["imported"],
        lambda t: t["seconds"]["imported"])
    row("to the first step (trainkit: fit_start; script: data and model ready)",
        lambda t: t["seconds"]["fit_start"], lambda t: t["seconds"]["ready"])
    for p in sorted({p for r in rows for w in who for p in r[w]["phases"]}):
        row(f"phase: {p}", lambda t, p=p: t["phases"].get(p, 0.0))
    row("first step to last step", lambda t: t["seconds"]["last_step"] - t["seconds"]["fit_start"],
        lambda t: t["seconds"]["last_step"] - t["seconds"]["ready"])
    row("**process start to last step**", lambda t: t["seconds"]["last_step"], lambda t: t["seconds"]["last_step"])
    row("CPU seconds, first step to last step", lambda t: t["cpu"]["last_step"] - t["cpu"]["fit_start"],
        lambda t: t["cpu"]["last_step"] - t["cpu"]["ready"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-csv", type=Path, default=Path("/tmp/mnist_csv"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--label", default="now", help="the name of this measurement in whole_run.json")
    parser.add_argument("--before", type=Path, default=None,
                        help="an earlier checkout (git worktree) whose trainkit runs as a third contender")
    parser.add_argument("--child", choices=["trainkit", "handwritten"])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--preset", choices=["mnist_fast", "cifar10_fast"], default="mnist_fast")
    parser.add_argument("--cifar-root", type=Path, default=HERE.parent.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs of both sides (default: the preset's)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of both sides (trainer.num_threads; default: torch's own)")
    parser.add_argument("words", nargs="*")
    args = parser.parse_args()
    if args.child == "trainkit":
        return child_trainkit(args.out, args.run_dir, args.words)
    if args.child == "handwritten":
        return child_handwritten(args.out, args.data, args.limit, args.threads)
    args.mnist_csv, args.cifar_root = args.mnist_csv.resolve(), args.cifar_root.resolve()
    with tempfile.TemporaryDirectory(prefix="trainkit-whole-") as name:
        tmp = Path(name)
        data = prepare(args, tmp)
        rows = []
        for k in range(args.rounds):
            rows.append(one_round(args, tmp, data, k))
            last = rows[-1]
            times = ", ".join(f"{w} {last[w]['seconds']['last_step']:.2f} s" for w in ("trainkit", "before",
                                                                                       "handwritten") if w in last)
            print(f"round {k}: ratio {last['ratio']:.3f}, {times}, load {last['load_before']:.2f}", flush=True)
    path = RESULTS / "whole_run.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    result[args.label] = {"rows": rows, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick,
                          "preset": args.preset,
                          "threads": args.threads, "before": str(args.before) if args.before else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(summary(rows))


if __name__ == "__main__":
    main()
