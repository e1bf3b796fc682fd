"""trainkit's performance benchmarks on real data: one command, a markdown table and a JSON file.

    .venv/bin/python benchmarks/run.py --mnist-csv /tmp/mnist_csv --cifar-root ../shared/data/cifar10

Sections (all by default; `--only throughput,overhead` picks some; `--quick` shrinks everything to debug the
harness):
  throughput  trainkit's training samples/s against plain hand-written loops (benchmarks/handwritten.py) on the
              same data, model, batch size and threads, in this process, epochs interleaved (median of several);
              `--device cuda` runs this section on a GPU (benchmarks/gpu_check.sh does)
  overhead    what an epoch costs besides training (validation, checkpoint, logging, progress display) and the
              host syncs it makes, by the function that made them
  ops         tensor ops per training step (torch.profiler), trainkit against the hand-written loop
  switches    trainer.compile, trainer.channels_last, trainer.matmul_precision, trainer.precision on this CPU
  startup     `trainkit --help` against `import torch`; `trainkit train` (default config) to its first step
  memory      peak resident memory (/usr/bin/time -v) of MNIST and CIFAR-10 runs
  accuracy    time to 99.0% MNIST test accuracy (experiment=mnist_cnn) and the CIFAR-10 preset, each against
              the classic tutorial recipe (SGD lr 0.001 momentum 0.9, batch 4) given the same wall time (long)

Every trainkit run is trainkit's own `Trainer` (src/trainkit/trainer.py), built from the shipped configs as
`trainkit train` builds it and trained one epoch at a time; its parts are timed by a callback on its events.
Nothing of trainkit is replaced at run time (only torch's Tensor methods are wrapped, for one epoch, to count
host syncs). The sections besides throughput are written for the CPU.

Results are merged into benchmarks/results/perf.json (a re-run section replaces its entry) and the whole table
is written to benchmarks/results/perf.md. Take timings on a quiet machine: the load average is recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from trainkit.trainer import Callback

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PY = sys.executable
TRAINKIT = str(Path(PY).with_name("trainkit"))
SECTIONS = ("throughput", "overhead", "ops", "switches", "startup", "memory", "accuracy")


# ---------------------------------------------------------------------------------------------- trainkit runs
def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from trainkit.cli.compose import config_dir, register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


class EpochTimer(Callback):
    """Where an epoch's wall time goes, from the Trainer's events: validation (validation_start to _end),
    checkpoint saving (checkpoint_start to _end) and epoch logging (metrics.csv, TensorBoard, the console line:
    from the checkpoint's end, or validation's without one, to epoch_end)."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.seconds: dict[str, float] = defaultdict(float)

    def _mark(self, name: str) -> float:
        self.marks[name] = now = time.perf_counter()
        return now

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.marks, self.seconds = {}, defaultdict(float)

    def on_validation_start(self, trainer: Any) -> None:
        self._mark("validation_start")

    def on_validation_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        self.seconds["validate"] += self._mark("validation_end") - self.marks["validation_start"]

    def on_checkpoint_start(self, trainer: Any) -> None:
        self._mark("checkpoint_start")

    def on_checkpoint_end(self, trainer: Any) -> None:
        self.seconds["checkpoint"] += self._mark("checkpoint_end") - self.marks["checkpoint_start"]

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        after = max(self.marks.get("checkpoint_end", 0.0), self.marks["validation_end"])
        self.seconds["log_epoch"] += self._mark("epoch_end") - after


class TrainkitRun:
    """trainkit's `Trainer` for one composed config, as `trainkit train` builds it (a live progress bar on a
    thrown-away terminal, TensorBoard, metrics.csv, checkpoints), trained one epoch at a time (`fit(epochs=k)`)
    so that contenders can take turns. A callback (`EpochTimer`) records where each epoch's wall time went;
    nothing of trainkit is replaced. `max_epochs=None` keeps the config's own (a preset that ends)."""

    def __init__(self, overrides: list[str], run_dir: Path, quick: bool = False, max_epochs: int | None = 10**6,
                 callbacks: tuple[Callback, ...] = ()) -> None:
        from rich.console import Console

        from trainkit.build import build_trainer
        from trainkit.data.base import DataSplits, Split

        extra = [f"trainer.max_epochs={max_epochs}"] if max_epochs else []
        if quick and not any(o.startswith("trainer.limit_train_batches=") for o in overrides):
            extra.append("trainer.limit_train_batches=20")
        self.cfg = compose([*overrides, *extra])
        # A terminal that is thrown away: the rich progress bar runs (and redraws) as on a real one.
        self._devnull = open(os.devnull, "w")
        console = Console(file=self._devnull, force_terminal=True, width=120)
        self.timer = EpochTimer()
        self.trainer = build_trainer(self.cfg, run_dir, callbacks=[self.timer, *callbacks], console=console)
        data, self.task = self.trainer.data, self.trainer.task
        self.loaders = {name: loader for name, loader in (("train", data.train), ("val", data.val),
                                                          ("test", data.test)) if loader is not None}
        # The splits as the readers gave them (the loaders hold the same tensors), for the hand-written contenders.
        split = lambda loader: None if loader is None else Split(loader.x, loader.y)  # noqa: E731
        self.data = DataSplits(split(data.train), split(data.val), split(data.test), data.meta)
        self.settings, self.opt = self.trainer.settings, self.trainer.opt
        self.rows: list[dict[str, float]] = []

    @property
    def state(self) -> Any:
        return self.trainer.state

    def epoch(self) -> dict[str, float]:
        """One more epoch through `Trainer.fit`; its metrics and where its wall time went (seconds)."""
        start = time.perf_counter()
        self.trainer.fit(epochs=self.trainer.state.epoch + 1)
        wall = time.perf_counter() - start
        m, s = self.trainer.state.history[-1], self.timer.seconds
        row = {"wall_s": wall, "train_s": m["time/epoch_s"], "samples_per_s": m["train/samples_per_s"],
               "validate_s": s["validate"], "checkpoint_s": s["checkpoint"], "log_epoch_s": s["log_epoch"],
               "loss": m.get("train/loss"), "val_acc": m.get("val/acc")}
        self.rows.append(row)
        return row

    def close(self) -> None:
        self.trainer.close()
        self._devnull.close()


def say(text: str) -> None:
    """Print past a live progress bar, which redirects sys.stdout into its (thrown-away) console."""
    print(text, file=sys.__stdout__, flush=True)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def mnist_overrides(args: argparse.Namespace) -> list[str]:
    return ["data=mnist_csv", f"data.train_csv={args.mnist_csv / 'train.csv'}",
            f"data.test_csv={args.mnist_csv / 'test.csv'}", *getattr(args, "trainkit_overrides", [])]


def load_avg() -> float:
    return os.getloadavg()[0]


# ------------------------------------------------------------------------------------------------ throughput
def throughput(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import torch

    import handwritten as hw
    from trainkit.models.cnn import CNN
    from trainkit.models.mlp import MLP

    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")]
    if args.quick:
        cases = cases[:1]
    device = torch.device(args.device)
    # The queue of kernels must drain inside a timed epoch (trainkit's ends with its metrics' host copy).
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads(), "epochs": args.epochs,
                           "warmup_epochs": 1, "cases": []}
    for model, batch in cases:
        load_before = load_avg()
        run = TrainkitRun([*mnist_overrides(args), f"model={model}", "optimizer=adam", "scheduler=none",
                           f"data.batch_size={batch}", f"trainer.num_threads={torch.get_num_threads()}",
                           f"trainer.device={args.device}"],
                          tmp / f"{model}-{batch}", args.quick)
        meta, train = run.data.meta, run.data.train
        x, y = hw.normalized(train.x, meta.mean, meta.std), train.y
        if args.quick:
            x, y = x[:20 * batch], y[:20 * batch]
        x, y = x.to(device), y.to(device)  # a hand-written GPU script keeps MNIST on the GPU too
        make = (lambda: MLP(meta.in_shape, meta.num_outputs, hidden=[500])) if model == "mlp" else \
            (lambda: CNN(meta.in_shape, meta.num_outputs))
        nets = {}
        for name in ("indexed", "indexed_fused", "dataloader"):
            torch.manual_seed(0)
            net = make().to(device)
            # torch's default Adam (what a minimal loop writes), and its fused kernel (what trainkit's configs
            # choose): the best hand-written loop, so the loop's own cost is compared with the same optimizer.
            nets[name] = (net, torch.optim.Adam(net.parameters(), lr=1e-3, fused=name == "indexed_fused" or None))
        gen = torch.Generator().manual_seed(0)

        def timed(fn) -> float:
            sync()
            start = time.perf_counter()
            n = fn()
            sync()
            return n / (time.perf_counter() - start)

        contenders = {
            "trainkit": lambda: run.epoch()["samples_per_s"],
            "indexed": lambda: timed(lambda: hw.indexed_epoch(*nets["indexed"], x, y, batch, gen)),
            "indexed_fused": lambda: timed(lambda: hw.indexed_epoch(*nets["indexed_fused"], x, y, batch, gen)),
        }
        if device.type == "cpu":  # the tutorials' DataLoader loop hands CPU batches to a CPU model only
            loader = hw.dataloader(x, y, batch)
            contenders["dataloader"] = lambda: timed(lambda: hw.dataloader_epoch(*nets["dataloader"], loader))
        speeds: dict[str, list[float]] = {k: [] for k in contenders}
        order = list(contenders)
        for epoch in range(1 + args.epochs):
            for name in order:
                speed = contenders[name]()
                if epoch:  # the first epoch of each warms up allocators and kernels (oneDNN, cuDNN, cuBLAS)
                    speeds[name].append(speed)
            order = order[1:] + order[:1]  # take turns at going first
        run.close()
        m = {k: med(v) for k, v in speeds.items()}
        # The machine's speed drifts by tens of percent between epochs here: a ratio of epochs run next to
        # each other (the same round) is steadier than a ratio of medians.
        others = [k for k in contenders if k != "trainkit"]
        paired = {k: med([a / b for a, b in zip(speeds["trainkit"], speeds[k])]) for k in others}
        case = {"model": model, "batch_size": batch, "samples_per_s": speeds, "median_samples_per_s": m,
                **{f"ratio_vs_{k}": m["trainkit"] / m[k] for k in others},
                **{f"paired_ratio_vs_{k}": paired[k] for k in others},
                "load_avg": [load_before, load_avg()], "trainkit_epochs": run.rows[1:]}
        say(f"throughput {model} batch {batch} on {device}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in m.items())
            + "; " + ", ".join(f"trainkit/{k} {case[f'ratio_vs_{k}']:.3f} (paired {paired[k]:.3f})" for k in others)
            + f" (load {load_before:.2f})")
        out["cases"].append(case)
    return out


# -------------------------------------------------------------------------------------------------- overhead
def overhead(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The MNIST MLP (784-500-10, Adam, batch 128) with every default on: validation of the 6,000 held-out
    samples each epoch, last/best checkpoints, TensorBoard, metrics.csv and a live progress bar. Taking turns
    with it: the same run without progress display and TensorBoard (what they cost inside the training time,
    background refresh thread included), and a bare `model(x)` pass over the validation split."""
    import torch

    import handwritten as hw

    base = [*mnist_overrides(args), "model=mlp", "optimizer=adam", "scheduler=none", "data.batch_size=128"]
    run = TrainkitRun(base, tmp / "overhead", args.quick)
    quiet = TrainkitRun([*base, "trainer.progress=none", "trainer.tensorboard=false"], tmp / "overhead-quiet",
                        args.quick)
    meta, val = run.data.meta, run.data.val
    xv = hw.normalized(val.x, meta.mean, meta.std)
    net, eval_batch = run.task.net, run.loaders["val"].batch_size

    def bare_eval() -> float:
        net.eval()
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(xv), eval_batch):
                net(xv[i:i + eval_batch])
        net.train()
        return time.perf_counter() - start

    load_before = load_avg()
    rows, quiet_rows, bare = [], [], []
    for epoch in range(1 + args.epochs):
        for r in ((run, quiet) if epoch % 2 else (quiet, run)):  # take turns at going first
            (rows if r is run else quiet_rows).append(r.epoch())
        bare.append(bare_eval())
    rows, quiet_rows, bare = rows[1:], quiet_rows[1:], bare[1:]
    syncs = count_syncs(run)
    run.close()
    quiet.close()
    keys = ("wall_s", "train_s", "validate_s", "checkpoint_s", "log_epoch_s")
    m = {k: med([r[k] for r in rows]) for k in keys}
    m["bare_validate_s"] = med(bare)
    m["train_s_without_display_and_tensorboard"] = med([r["train_s"] for r in quiet_rows])
    # No event brackets the logger's per-step call (the bar, TensorBoard every 50 steps), so its cost is the
    # difference of two runs' training times, epoch by epoch (paired): drift can make it negative.
    m["log_step_s"] = med([a["train_s"] - b["train_s"] for a, b in zip(rows, quiet_rows)])
    outside = m["wall_s"] - m["train_s"]  # validation, checkpoint, epoch logging, and the rest of fit's epoch
    share = {
        "validate": m["validate_s"] / m["wall_s"],
        "checkpoint": m["checkpoint_s"] / m["wall_s"],
        "log_epoch": m["log_epoch_s"] / m["wall_s"],
        "log_step": m["log_step_s"] / m["wall_s"],  # inside the training time
        "rest": (outside - m["validate_s"] - m["checkpoint_s"] - m["log_epoch_s"]) / m["wall_s"],
    }
    share["total"] = sum(share.values())
    share["validate_beyond_bare_forward"] = (m["validate_s"] - m["bare_validate_s"]) / m["wall_s"]
    # What trainkit adds to an epoch: everything but the validation forward passes a hand-written loop makes too.
    share["added_by_trainkit"] = share["total"] - min(m["validate_s"], m["bare_validate_s"]) / m["wall_s"]
    say(f"overhead: {share['total']:.2%} of an epoch of {m['wall_s']:.2f} s: "
        + ", ".join(f"{k} {v:.2%}" for k, v in share.items() if k != "total") + f"; syncs {syncs}")
    return {"epochs": rows, "epochs_without_display": quiet_rows, "bare_validate_s": bare, "median_s": m,
            "share_of_epoch": share, "host_syncs": syncs, "load_avg": [load_before, load_avg()]}


def count_syncs(run: TrainkitRun) -> dict[str, Any]:
    """Calls that move a tensor's value to the host (a device sync on a GPU) in one epoch, by the function that
    made them. torch's own Tensor methods are wrapped for that epoch, trainkit's code is not touched."""
    import torch

    counts: dict[str, int] = defaultdict(int)
    patched = {}
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)
        patched[name] = original

        def wrapper(self, *a, _original=original, _name=name, **k):
            code = sys._getframe(1).f_code
            path = Path(code.co_filename)
            counts[f"{_name} in {path.parent.name}/{path.name}:{code.co_name}"] += 1
            return _original(self, *a, **k)

        setattr(torch.Tensor, name, wrapper)
    steps_before = run.state.step
    try:
        run.epoch()
    finally:
        for name, original in patched.items():
            setattr(torch.Tensor, name, original)
    steps = run.state.step - steps_before
    return {"steps": steps, "log_every_n_steps": run.settings.log_every_n_steps, "calls": dict(counts)}


# ------------------------------------------------------------------------------------------------------- ops
def ops(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Tensor ops per training step by torch.profiler: a count, so it does not depend on the machine's load."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    import handwritten as hw
    from trainkit.models.mlp import MLP

    steps = 100
    run = TrainkitRun([*mnist_overrides(args), "model=mlp", "optimizer=adam", "scheduler=none", "data.batch_size=128",
                       f"trainer.limit_train_batches={steps}", "trainer.limit_eval_batches=1"], tmp / "ops")
    run.epoch()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run.epoch()
    run.close()
    meta, train = run.data.meta, run.data.train
    x, y = hw.normalized(train.x, meta.mean, meta.std)[:steps * 128], train.y[:steps * 128]
    net = MLP(meta.in_shape, meta.num_outputs, hidden=[500])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)  # the best loop: the optimizer trainkit's adam uses
    gen = torch.Generator().manual_seed(0)
    hw.indexed_epoch(net, opt, x, y, 128, gen)
    with profile(activities=[ProfilerActivity.CPU]) as prof_hw:
        hw.indexed_epoch(net, opt, x, y, 128, gen)

    def per_step(p) -> dict[str, float]:
        # Top-level aten ops only (those not called from inside another op), as they are dispatched.
        counts: dict[str, int] = defaultdict(int)
        for e in p.events():
            if e.name.startswith("aten::") and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")):
                counts[e.name] += 1
        return {k: v / steps for k, v in sorted(counts.items())}

    tk, plain = per_step(prof), per_step(prof_hw)
    extra = {k: tk.get(k, 0) - plain.get(k, 0) for k in sorted(set(tk) | set(plain))}
    extra = {k: v for k, v in extra.items() if abs(v) >= 0.01}
    # The validation pass (1 batch) runs inside trainkit's profiled epoch: about 8 ops, spread over the steps.
    out = {"steps": steps, "trainkit_per_step": sum(tk.values()), "handwritten_per_step": sum(plain.values()),
           "extra_per_step": extra}
    say(f"ops per step: trainkit {out['trainkit_per_step']:.1f}, hand-written {out['handwritten_per_step']:.1f}; "
          f"extra {extra}")
    return out


# -------------------------------------------------------------------------------------------------- switches
def switches(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Each switch against the same config without it, epochs interleaved. The compile time is the first
    epoch's extra time over the median epoch."""
    variants = {
        "baseline": [],
        "trainer.channels_last=true": ["trainer.channels_last=true"],
        "trainer.compile=true": ["trainer.compile=true"],
        "trainer.matmul_precision=medium": ["trainer.matmul_precision=medium"],
        "trainer.precision=bf16-mixed": ["trainer.precision=bf16-mixed"],
    }
    datasets = {
        "mnist cnn": [*mnist_overrides(args), "model=cnn"],
        "mnist mlp": [*mnist_overrides(args), "model=mlp"],
        "cifar10 cnn": ["data=cifar10", f"data.root={args.cifar_root}", "data.test_fraction=0.2", "model=cnn"],
    }
    out: dict[str, Any] = {"epochs": args.switch_epochs, "cases": []}
    for data_name, base in datasets.items():
        if data_name == "mnist mlp":
            chosen = {k: v for k, v in variants.items() if "channels_last" not in k}  # no convs: nothing to change
        else:
            chosen = variants
        load_before = load_avg()
        runs = {}
        for name, extra in chosen.items():
            runs[name] = TrainkitRun([*base, "optimizer=adam", "scheduler=none", "data.batch_size=128",
                                      "trainer.progress=none", "trainer.tensorboard=false", *extra],
                                     tmp / f"sw-{data_name}-{name}".replace(" ", "_"), args.quick)
        first = {name: r.epoch() for name, r in runs.items()}
        rows: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
        for _ in range(args.switch_epochs):
            for name, r in runs.items():
                rows[name].append(r.epoch())
        for r in runs.values():
            r.close()
        result = {}
        for name in runs:
            speed = med([r["samples_per_s"] for r in rows[name]])
            train_s = med([r["train_s"] for r in rows[name]])
            result[name] = {"samples_per_s": speed, "first_epoch_extra_s": first[name]["train_s"] - train_s,
                            "loss_after": rows[name][-1]["loss"], "val_acc_after": rows[name][-1]["val_acc"]}
        base_speed = result["baseline"]["samples_per_s"]
        for name in result:
            result[name]["speedup"] = result[name]["samples_per_s"] / base_speed
        say(f"switches {data_name}: " + ", ".join(f"{k} {v['speedup']:.3f}x" for k, v in result.items())
              + f" (load {load_before:.2f})")
        out["cases"].append({"data": data_name, "batch_size": 128, "variants": result,
                             "load_avg": [load_before, load_avg()]})
    return out


# --------------------------------------------------------------------------------------------------- startup
def wall(cmd: list[str], repeats: int, cwd: Path, env: dict[str, str] | None = None) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, **(env or {})})
        times.append(time.perf_counter() - start)
    return times


# `trainkit train ARGS` through the Python API (what the CLI runs, in this process), with a callback that notes
# the moment the first optimizer iteration ended and ends the process there.
FIRST_STEP = """
import os, sys, time
import trainkit
from trainkit.trainer import Callback
class FirstStep(Callback):
    def on_step_end(self, trainer, step, metrics):
        with open(os.environ["FIRST_STEP_FILE"], "w") as f:
            f.write(repr(time.time()))
        os._exit(0)
trainkit.train(sys.argv[1:], callbacks=[FirstStep()])
"""


PLAIN_FIRST_STEP = """
import os, time
import torch
from torch import nn
net = nn.Sequential(nn.Linear(1, 500), nn.ReLU(), nn.Linear(500, 1))
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
x = torch.rand(64, 1) * 4 - 2
loss = nn.functional.mse_loss(net(x), x ** 2)
opt.zero_grad()
loss.backward()
opt.step()
with open(os.environ["FIRST_STEP_FILE"], "w") as f:
    f.write(repr(time.time()))
"""


def first_step(cmd: list[str], repeats: int, tmp: Path) -> list[float]:
    """Seconds from starting `cmd` to the end of its first training step (the script writes the moment)."""
    out = []
    marker = tmp / "first_step.txt"
    for _ in range(repeats):
        marker.unlink(missing_ok=True)
        start = time.time()
        subprocess.run(cmd, cwd=tmp, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "FIRST_STEP_FILE": str(marker)})
        out.append(float(marker.read_text()) - start)
    return out


def startup(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n = 3 if args.quick else 7
    help_imports = subprocess.run(
        [PY, "-c", "import sys; from trainkit.cli import main; main(['--help']); "
                   "print(sorted(m for m in ('torch', 'hydra', 'omegaconf', 'rich') if m in sys.modules))"],
        capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    out: dict[str, Any] = {
        "python_pass_s": med(wall([PY, "-c", "pass"], n, tmp)),
        "import_torch_s": med(wall([PY, "-c", "import torch"], n, tmp)),
        "trainkit_help_s": med(wall([TRAINKIT, "--help"], n, tmp)),
        "trainkit_help_imports": help_imports,
    }
    runner, plain = tmp / "first_step.py", tmp / "plain_first_step.py"
    runner.write_text(FIRST_STEP)
    plain.write_text(PLAIN_FIRST_STEP)
    first, plain_first = [], []
    for _ in range(n):  # taking turns
        first += first_step([PY, str(runner)], 1, tmp)
        plain_first += first_step([PY, str(plain)], 1, tmp)
    out["train_to_first_step_s"] = med(first)
    out["train_to_first_step_all_s"] = first
    out["plain_script_to_first_step_s"] = med(plain_first)
    out["plain_script_to_first_step_all_s"] = plain_first
    out["train_default_total_s"] = med(wall([TRAINKIT, "train"], max(3, n // 2), tmp))
    imports = subprocess.run([PY, "-X", "importtime", "-c", "import trainkit.commands.train"], capture_output=True,
                             text=True, check=True).stderr
    cumulative = {}
    for line in imports.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s*(\S+)$", line)
        if m and m.group(2) in ("torch", "hydra", "omegaconf", "rich", "torchvision", "trainkit.commands.train",
                                "torch.utils.tensorboard", "tensorboard"):
            cumulative[m.group(2)] = int(m.group(1)) / 1e6
    out["import_s"] = cumulative
    shutil.rmtree(tmp / "outputs", ignore_errors=True)
    say(f"startup: {out}")
    return out


# ---------------------------------------------------------------------------------------------------- memory
def peak_rss(cmd: list[str], cwd: Path) -> dict[str, float]:
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    elapsed = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", proc.stderr).group(1)
    parts = [float(p) for p in elapsed.split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return {"peak_rss_mib": rss / 1024, "wall_s": seconds}


def memory(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    limit = ["trainer.limit_train_batches=20"] if args.quick else []
    mnist = [f"data.train_csv={args.mnist_csv / 'train.csv'}", f"data.test_csv={args.mnist_csv / 'test.csv'}"]
    cifar = [f"data.root={args.cifar_root}", "data.test_fraction=0.2"]
    runs = {
        # What any training process here holds before data: the libraries (an optimizer imports torch._dynamo).
        "floor: the imports and an optimizer, no data":
            [PY, "-c", "import torch, hydra, rich, torch.utils.tensorboard; torch.optim.Adam(torch.nn.Linear(1, 1)"
                       ".parameters())"],
        "experiment=mnist_mlp, 1 epoch": [TRAINKIT, "train", "experiment=mnist_mlp", *mnist, "trainer.max_epochs=1",
                                          "trainer.progress=none", *limit],
        "experiment=mnist_mlp, 1 epoch, parsing the CSV (no cache)": [
            TRAINKIT, "train", "experiment=mnist_mlp", *mnist, "data.cache=false", "trainer.max_epochs=1",
            "trainer.progress=none", *limit],
        "hand-written: pandas.read_csv, float32 tensors, DataLoader, the MLP, 1 epoch": [
            PY, str(HERE / "handwritten.py"), "mnist-mlp", str(args.mnist_csv / "train.csv")],
        "experiment=mnist_cnn, 1 epoch": [TRAINKIT, "train", "experiment=mnist_cnn", *mnist, "trainer.max_epochs=1",
                                          "trainer.progress=none", *limit],
        "experiment=cifar10_cnn, 1 epoch": [TRAINKIT, "train", "experiment=cifar10_cnn", *cifar,
                                            "trainer.max_epochs=1", "trainer.progress=none", *limit],
    }
    out: dict[str, Any] = {"runs": {}}
    for name, cmd in runs.items():
        out["runs"][name] = {"command": " ".join(Path(c).name if c in (PY, TRAINKIT) else c for c in cmd),
                             **peak_rss(cmd, tmp)}
        say(f"memory {name}: {out['runs'][name]['peak_rss_mib']:.0f} MiB")
    shutil.rmtree(tmp / "outputs", ignore_errors=True)
    out["data"] = split_storage(args)
    return out


def split_storage(args: argparse.Namespace) -> dict[str, Any]:
    """What the loaders hold: the readers' uint8 tensors themselves (no copy) and their bytes."""
    from trainkit.build import build_run

    out = {}
    for name, overrides in (("mnist", [*mnist_overrides(args), "model=mlp"]),
                            ("cifar10", ["data=cifar10", f"data.root={args.cifar_root}", "data.test_fraction=0.2",
                                         "model=cnn"])):
        built = build_run(compose(overrides))
        splits = {"train": built.data.train, "val": built.data.val, "test": built.data.test}
        entry = {}
        for split, s in splits.items():
            loader = built.loaders[split]
            entry[split] = {"samples": len(s), "dtype": str(s.x.dtype).replace("torch.", ""),
                            "mib": (s.x.nbytes + s.y.nbytes) / 2**20,
                            "loader_shares_reader_tensor": loader.x.data_ptr() == s.x.data_ptr()}
        out[name] = entry
        del built
    say(f"memory data: {out}")
    return out


# -------------------------------------------------------------------------------------------------- accuracy
def accuracy(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import torch

    import handwritten as hw

    out = {}
    presets = {
        "mnist_cnn": (["experiment=mnist_cnn", f"data.train_csv={args.mnist_csv / 'train.csv'}",
                       f"data.test_csv={args.mnist_csv / 'test.csv'}"], 0.99),
        "cifar10_cnn": (["experiment=cifar10_cnn", f"data.root={args.cifar_root}", "data.test_fraction=0.2"], None),
    }
    for name, (overrides, target) in presets.items():
        if args.quick:
            overrides = [*overrides, "trainer.max_epochs=2", "trainer.limit_train_batches=20"]
        load_before = load_avg()
        run = TrainkitRun([*overrides, "trainer.progress=none"], tmp / f"acc-{name}", max_epochs=None)
        from trainkit.engine.loop import evaluate

        curve, elapsed = [], 0.0
        while run.state.epoch < run.cfg.trainer.max_epochs and not run.state.stopped_early:
            row = run.epoch()
            elapsed += row["wall_s"]  # training, validation, checkpoint, logging: the run's own wall time
            # The current weights (Trainer.test() would load best.ckpt's), by trainkit's evaluate; not counted.
            test = evaluate(run.task, run.loaders["test"], run.opt.autocast, "test/")
            curve.append({"epoch": run.state.epoch, "wall_s": elapsed, "test_acc": test["test/acc"],
                          "val_acc": row["val_acc"]})
            say(f"accuracy {name}: epoch {run.state.epoch} {elapsed:.0f} s test/acc {test['test/acc']:.4f}")
            if target is not None and test["test/acc"] >= target and not args.full_curve:
                break
        run.close()
        reached = next((c for c in curve if target is not None and c["test_acc"] >= target), None)
        budget = reached["wall_s"] if reached else curve[-1]["wall_s"]
        # The tutorial recipe on the same training split, network and threads, for the same wall time.
        meta, data = run.data.meta, run.data
        x, y = hw.normalized(data.train.x, meta.mean, meta.std), data.train.y
        xt, yt = hw.normalized(data.test.x, meta.mean, meta.std), data.test.y
        from trainkit.build import build_task

        torch.manual_seed(0)
        net = build_task(run.cfg, meta).net
        checkpoints = [budget * f for f in (0.25, 0.5, 0.75)]
        tut = hw.tutorial(net, x, y, budget, lambda: hw.accuracy(net, xt, yt), checkpoints)
        entry = {"target_test_acc": target, "trainkit_curve": curve,
                 "trainkit_reached_s": reached["wall_s"] if reached else None,
                 "trainkit_epochs": reached["epoch"] if reached else len(curve),
                 "budget_s": budget, "trainkit_test_acc": (reached or curve[-1])["test_acc"],
                 "tutorial_curve": tut, "tutorial_test_acc": tut[-1]["test_acc"], "load_avg": [load_before, load_avg()],
                 "train_samples": len(x), "test_samples": len(xt)}
        say(f"accuracy {name}: trainkit {entry['trainkit_test_acc']:.4f} in {budget:.0f} s; tutorial "
              f"{entry['tutorial_test_acc']:.4f} ({tut[-1]['epochs']:.2f} epochs) in the same time")
        out[name] = entry
    return out


# ---------------------------------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpus": os.cpu_count(), "cpu": cpu, "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "gpu": gpu,
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


def markdown(r: dict[str, Any]) -> str:
    lines = ["# trainkit performance results", "",
             f"Machine: {r['machine']['cpus']} cores ({r['machine']['cpu']}), "
             f"{r['machine'].get('gpu') or 'CPU only'}, torch {r['machine']['torch']}, "
             f"Python {r['machine']['python']}, {r['machine']['torch_threads']} torch threads. Written by "
             f"`benchmarks/run.py`; load averages are the 1-minute ones before and after each measurement.", ""]
    if "throughput" in r:
        t = r["throughput"]
        lines += [f"## Training throughput (MNIST, Adam, on {t.get('device', 'cpu')}, {t['threads']} torch thread(s); "
                  f"median of {t['epochs']} epochs after 1 warm-up)", "",
                  "| model | batch | trainkit samples/s | hand-written: indexed, fused Adam | indexed | DataLoader | "
                  "trainkit / indexed, fused (paired) | trainkit / indexed (paired) | trainkit / DataLoader (paired) "
                  "| load |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for c in t["cases"]:
            m = c["median_samples_per_s"]
            name = "MLP 784-500-10" if c["model"] == "mlp" else "CNN (LeNet 6-16, 120-84)"
            ratios = " | ".join(f"{c[f'ratio_vs_{k}']:.3f} ({c[f'paired_ratio_vs_{k}']:.3f})" if f"ratio_vs_{k}" in c
                                else "–" for k in ("indexed_fused", "indexed", "dataloader"))
            lines.append(f"| {name} | {c['batch_size']} | {m['trainkit']:,.0f} | {m.get('indexed_fused', float('nan')):,.0f} | "
                         f"{m['indexed']:,.0f} | {m.get('dataloader', float('nan')):,.0f} | {ratios} | "
                         f"{c['load_avg'][0]:.2f}–{c['load_avg'][1]:.2f} |")
        lines.append("")
    if "overhead" in r:
        o = r["overhead"]
        s, m = o["share_of_epoch"], o["median_s"]
        lines += ["## Per-epoch costs besides training (MNIST MLP, batch 128, every default on)", "",
                  "| part | seconds per epoch | share of the epoch |", "|---|---:|---:|",
                  f"| whole epoch (wall) | {m['wall_s']:.3f} | 100% |",
                  f"| training steps (time/epoch_s) | {m['train_s']:.3f} | {m['train_s'] / m['wall_s']:.2%} |",
                  f"| validation (6,000 samples) | {m['validate_s']:.4f} | {s['validate']:.2%} |",
                  f"| checkpoint (last + best) | {m['checkpoint_s']:.4f} | {s['checkpoint']:.2%} |",
                  f"| epoch logging (console line, metrics.csv, TensorBoard flush) | {m['log_epoch_s']:.4f} | "
                  f"{s['log_epoch']:.2%} |",
                  f"| per-step logging (progress bar, TensorBoard every 50 steps; inside training: the paired "
                  f"difference from the same run without them, which took "
                  f"{m['train_s_without_display_and_tensorboard']:.3f} s; negative: drift) | {m['log_step_s']:.4f} | "
                  f"{s['log_step']:.2%} |",
                  f"| rest of the epoch in fit | | {s['rest']:.2%} |",
                  f"| **all of these** | | **{s['total']:.2%}** |",
                  f"| **what trainkit adds** (all of these but the validation forward passes a bare `model(x)` loop "
                  f"makes too) | | **{s.get('added_by_trainkit', float('nan')):.2%}** |", "",
                  f"Validation against a bare `model(x)` loop over the same normalized split at the same batch size: "
                  f"{m['validate_s']:.4f} s against {m['bare_validate_s']:.4f} s "
                  f"({s['validate_beyond_bare_forward']:+.2%} of the epoch).", "",
                  f"Host syncs in one epoch of {o['host_syncs']['steps']} steps (log every "
                  f"{o['host_syncs']['log_every_n_steps']}): {o['host_syncs']['calls']}", ""]
    if "ops" in r:
        o = r["ops"]
        lines += ["## Tensor ops per training step (torch.profiler, MLP, batch 128, fused Adam)", "",
                  f"trainkit {o['trainkit_per_step']:.1f}, hand-written indexed loop {o['handwritten_per_step']:.1f}; "
                  f"trainkit's extra ops per step: "
                  + ", ".join(f"`{k}` {v:+.2f}" for k, v in o["extra_per_step"].items()), ""]
    if "switches" in r:
        lines += ["## Speed switches on this CPU (batch 128, Adam; samples/s, median)", "",
                  "| data, model | switch | samples/s | vs baseline | first epoch extra (s) | train loss after |",
                  "|---|---|---:|---:|---:|---:|"]
        for c in r["switches"]["cases"]:
            for name, v in c["variants"].items():
                lines.append(f"| {c['data']} | {name} | {v['samples_per_s']:,.0f} | {v['speedup']:.3f}× | "
                             f"{v['first_epoch_extra_s']:.1f} | {v['loss_after']:.4f} |")
        lines.append("")
    if "startup" in r:
        s = r["startup"]
        lines += ["## Start-up (whole processes, median)", "", "| command | seconds |", "|---|---:|",
                  f"| `python -c pass` | {s['python_pass_s']:.3f} |",
                  f"| `python -c \"import torch\"` | {s['import_torch_s']:.3f} |",
                  f"| `trainkit --help` (imports {s['trainkit_help_imports']}) | {s['trainkit_help_s']:.3f} |",
                  f"| `trainkit train` to the end of its first training step | {s['train_to_first_step_s']:.3f} |",
                  f"| a plain PyTorch script (import torch, the same MLP, Adam, one step) to the end of that step | "
                  f"{s['plain_script_to_first_step_s']:.3f} |",
                  f"| `trainkit train` (default config, 10 epochs, whole run) | {s['train_default_total_s']:.3f} |", "",
                  "Cumulative import times of `import trainkit.commands.train` (-X importtime, s): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in s["import_s"].items()), ""]
    if "memory" in r:
        lines += ["## Peak resident memory (/usr/bin/time -v)", "", "| run | peak RSS (MiB) | wall (s) |",
                  "|---|---:|---:|"]
        for name, v in r["memory"]["runs"].items():
            lines.append(f"| `{v['command']}` | {v['peak_rss_mib']:.0f} | {v['wall_s']:.1f} |")
        lines.append("")
        for name, entry in r["memory"]["data"].items():
            lines.append(f"{name}: " + "; ".join(
                f"{split} {e['samples']:,} × {e['dtype']} = {e['mib']:.1f} MiB (loader holds the reader's tensor: "
                f"{e['loader_shares_reader_tensor']})" for split, e in entry.items()))
        lines.append("")
    if "accuracy" in r:
        lines += ["## Time to accuracy (same network, same training split, same threads)", "",
                  "| preset | trainkit: test accuracy | wall time (s) | epochs | tutorial recipe (SGD 0.001, m 0.9, "
                  "batch 4) in the same wall time | its epochs |", "|---|---:|---:|---:|---:|---:|"]
        for name, e in r["accuracy"].items():
            if not isinstance(e, dict):  # measured_at, quick
                continue
            goal = f" (first ≥ {e['target_test_acc']:.1%})" if e["target_test_acc"] else " (end of the preset)"
            lines.append(f"| {name}{goal} | {e['trainkit_test_acc']:.4f} | {e['budget_s']:.0f} | {e['trainkit_epochs']} | "
                         f"{e['tutorial_test_acc']:.4f} | {e['tutorial_curve'][-1]['epochs']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-csv", type=Path, default=Path("/tmp/mnist_csv"),
                        help="folder with train.csv and test.csv (benchmarks/mnist_to_csv.py writes them)")
    parser.add_argument("--cifar-root", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--only", default=",".join(s for s in SECTIONS),
                        help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--epochs", type=int, default=5, help="measured epochs per contender (after 1 warm-up)")
    parser.add_argument("--switch-epochs", type=int, default=3, help="switches: measured epochs (after the first)")
    parser.add_argument("--cases", default="mlp:128,mlp:512,mlp:2048,cnn:128,cnn:512",
                        help="throughput: model:batch_size pairs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    parser.add_argument("--device", default="cpu", help="throughput: where trainkit and the hand-written loops "
                        "train (cpu, cuda); the other sections run on trainkit's default device")
    parser.add_argument("--trainkit-overrides", nargs="*", default=[],
                        help="MNIST sections: more overrides for trainkit's runs, e.g. trainer.progress=none")
    parser.add_argument("--quick", action="store_true", help="tiny runs: check the harness, not the figures")
    parser.add_argument("--full-curve", action="store_true", help="accuracy: run the whole preset, not just to 99%%")
    parser.add_argument("--out", type=Path, default=RESULTS / "perf.json")
    args = parser.parse_args()
    args.mnist_csv, args.cifar_root = args.mnist_csv.resolve(), args.cifar_root.resolve()
    if not (args.mnist_csv / "train.csv").is_file():
        raise SystemExit(f"no {args.mnist_csv / 'train.csv'}: run benchmarks/mnist_to_csv.py ../shared/data/mnist "
                         f"{args.mnist_csv} first.")
    if args.quick:
        args.epochs = args.switch_epochs = 2
    sys.path.insert(0, str(HERE))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result["machine"] = machine()
    with tempfile.TemporaryDirectory(prefix="trainkit-perf-") as tmp:
        for section in SECTIONS:
            if section in chosen:
                started = time.strftime("%Y-%m-%d %H:%M:%S")
                value = globals()[section](args, Path(tmp))
                result[section] = {**value, "measured_at": started, "quick": args.quick}
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(result, indent=2) + "\n")  # after each section: nothing lost
    md = markdown(result)
    args.out.with_suffix(".md").write_text(md + "\n")
    print(md)
    say(f"\nwritten: {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
