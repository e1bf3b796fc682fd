"""The checks behind benchmarks/gpu_check.sh (its header says how to run them and which switches there are).

Each check runs in a process of its own (a crash, a hang or a CUDA error stays in it) and trains through the real
`trainkit train` path: the Python API `trainkit.train(overrides, callbacks=[...])`, which runs what the CLI runs,
watched by a callback (`Probe`) that reads where the modules and data are and how fast each epoch went. The
throughput check is `benchmarks/run.py --only throughput --device cuda`. Nothing of trainkit is replaced.

    python benchmarks/gpu_check.py OUT.json                  # every check, the driver
    python benchmarks/gpu_check.py one NAME CTX.json RESULT   # one check (the driver starts these)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
PY = sys.executable
# val/acc that shows a run learned: twice chance on 10 classes (generated labels too, see write_mnist_csv); the
# quick dry run's 4 × 84 steps reach 0.2-0.5 on generated data (chance 0.1 ± 0.01 on its 1,200 samples)
LEARNED, LEARNED_QUICK = 0.2, 0.14


# ------------------------------------------------------------------------------------------------------ data
def write_mnist_csv(folder: Path, rows: tuple[int, int] = (60_000, 10_000), seed: int = 0) -> None:
    """MNIST-format CSVs (Kaggle layout: header label,pixel0..pixel783) of random uint8 pixels, for a machine
    without the real files. Throughput does not depend on the pixel values. The label is which of the 10 middle
    pixel rows (9..18) is brightest, so a run that trains learns it and a broken one stays at chance (0.1)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    # Each value's text with its separator, padded with 0 bytes that are dropped: no per-number Python.
    lut = np.zeros((256, 4), np.uint8)
    lut_end = np.zeros((256, 4), np.uint8)
    for v in range(256):
        text = str(v).encode()
        lut[v, :len(text) + 1] = list(text + b",")
        lut_end[v, :len(text) + 1] = list(text + b"\n")
    header = ("label," + ",".join(f"pixel{i}" for i in range(784)) + "\n").encode()
    for name, n in zip(("train.csv", "test.csv"), rows):
        with open(folder / name, "wb") as f:
            f.write(header)
            for start in range(0, n, 10_000):
                pixels = rng.integers(0, 256, size=(min(10_000, n - start), 784), dtype=np.uint8)
                labels = pixels.reshape(-1, 28, 28)[:, 9:19].sum(axis=2, dtype=np.int64).argmax(1)
                table = np.concatenate([labels[:, None].astype(np.uint8), pixels], axis=1)
                cells = lut[table]
                cells[:, -1] = lut_end[table[:, -1]]
                flat = cells.reshape(-1)
                f.write(flat[flat != 0].tobytes())


# --------------------------------------------------------------------------------------------- one check
@dataclass
class Ctx:
    device: str  # cuda, or cpu for the dry run
    quick: bool
    mnist: str  # folder with train.csv and test.csv
    work: str  # where runs write
    logs: str  # where the throughput section writes its JSON


def probe_class() -> type:
    from trainkit.trainer import Callback

    class Probe(Callback):
        """What a run really did, read from the Trainer: devices, layouts, wrappers, and each epoch's speed."""

        def __init__(self) -> None:
            self.info: dict[str, Any] = {}
            self.epochs: list[dict[str, float]] = []

        def on_fit_start(self, trainer: Any) -> None:
            import torch
            from torch.nn.parallel import DistributedDataParallel

            modules = trainer.task.modules()
            params = [p for m in modules.values() for p in m.parameters()]
            loader = trainer.data.train
            convs = [p for p in params if p.dim() == 4]
            self.info.update(
                param_device=str(params[0].device),
                data_device=str(loader.x.device),
                data_pinned=bool(loader.x.is_pinned()) if loader.x.device.type == "cpu" else None,
                ddp=isinstance(getattr(trainer.task, "train_net", None), DistributedDataParallel),
                compiled=any(getattr(m, "_compiled_call_impl", None) is not None for m in modules.values()),
                conv_weights_channels_last=(all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
                                            if convs else None),
                precision=trainer.settings.precision,
                deterministic=torch.are_deterministic_algorithms_enabled(),
            )

        def on_step_end(self, trainer: Any, step: int, metrics: Any) -> None:
            if "grad_scaler_enabled" not in self.info:
                self.info["grad_scaler_enabled"] = trainer.opt.scaler.is_enabled()

        def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
            self.epochs.append({k: metrics.get(k) for k in ("time/epoch_s", "train/samples_per_s", "train/loss",
                                                            "val/acc")})
            if trainer.opt.scaler.is_enabled():
                self.info["grad_scale"] = float(trainer.opt.scaler.get_scale())

    return Probe


def base(ctx: Ctx, model: str = "mlp", batch: int = 128) -> list[str]:
    epochs = 4 if ctx.quick else 2  # the quick runs' epochs are 84 steps: the CNN needs a few to learn
    out = ["data=mnist_csv", f"data.train_csv={ctx.mnist}/train.csv", f"data.test_csv={ctx.mnist}/test.csv",
           f"model={model}", "optimizer=adam", "scheduler=none", f"data.batch_size={batch}",
           f"trainer.device={ctx.device}", f"trainer.max_epochs={epochs}", "trainer.progress=none",
           "trainer.tensorboard=false"]
    if ctx.device == "cpu":  # the dry run: one thread each, on a CPU that other work shares
        out.append("trainer.num_threads=1")
    return out + (["trainer.limit_train_batches=100", "trainer.limit_eval_batches=10"] if ctx.quick else [])


def train(ctx: Ctx, overrides: list[str], name: str) -> tuple[dict[str, Any], Any]:
    """`trainkit train OVERRIDES` in this process, in WORK/NAME, with a Probe attached."""
    import trainkit

    probe = probe_class()()
    summary = trainkit.train([*overrides, f"hydra.run.dir={Path(ctx.work) / name}"], callbacks=[probe])
    return summary, probe


def run_figures(summary: dict[str, Any], probe: Any) -> dict[str, Any]:
    final, epochs = summary.get("final", {}), probe.epochs
    return {**probe.info, "val_acc": final.get("val/acc"), "train_loss": final.get("train/loss"),
            "test_acc": summary.get("test", {}).get("test/acc"),
            "first_epoch_s": epochs[0]["time/epoch_s"] if epochs else None,
            "samples_per_s_last_epoch": epochs[-1]["train/samples_per_s"] if epochs else None}


def learned(ctx: Ctx, fig: dict[str, Any]) -> list[str]:
    """Why a run did not train properly (empty: it did)."""
    problems, least = [], LEARNED_QUICK if ctx.quick else LEARNED
    if not (isinstance(fig["train_loss"], float) and math.isfinite(fig["train_loss"])):
        problems.append(f"train/loss is {fig['train_loss']}")
    if not (isinstance(fig["val_acc"], float) and fig["val_acc"] >= least):
        problems.append(f"val/acc {fig['val_acc']} < {least} (chance 0.1): it did not learn")
    return problems


def simple(model: str, extra: list[str], expect: Callable[[Ctx, dict[str, Any]], list[str]]) -> Callable:
    """A check that trains once with `extra` overrides and passes when it learned and `expect` finds nothing."""
    def check(ctx: Ctx, name: str) -> dict[str, Any]:
        fig = run_figures(*train(ctx, [*base(ctx, model), *extra], name))
        dev = ctx.device
        problems = learned(ctx, fig) + expect(ctx, fig)
        if not fig["param_device"].startswith(dev):
            problems.append(f"the modules are on {fig['param_device']}, not {dev}")
        return {"passed": not problems, "figures": fig, "error": "; ".join(problems) or None}
    return check


def check_precision(fig: dict[str, Any], precision: str, scaler: bool) -> list[str]:
    out = []
    if fig["precision"] != precision:
        out.append(f"precision {fig['precision']}, expected {precision}")
    if fig.get("grad_scaler_enabled") != scaler:
        out.append(f"GradScaler enabled: {fig.get('grad_scaler_enabled')}, expected {scaler}")
    return out


def expect_data(on_device: bool) -> Callable[[Ctx, dict[str, Any]], list[str]]:
    def expect(ctx: Ctx, fig: dict[str, Any]) -> list[str]:
        where = ctx.device if on_device else "cpu"
        out = [] if fig["data_device"].startswith(where) else [f"the split is on {fig['data_device']}, not {where}"]
        if not on_device and ctx.device == "cuda" and not fig["data_pinned"]:
            out.append("the host split is not pinned")
        return out
    return expect


def ddp_one_process(ctx: Ctx, name: str) -> dict[str, Any]:
    """Started by torchrun --nproc_per_node=1. trainkit joins a process group only for WORLD_SIZE > 1
    (engine/distributed.setup), so a one-process run trains without DDP; this check records that, then joins
    a one-process group itself (env:// from torchrun) and runs the same command, which then wraps the model in
    DistributedDataParallel and reduces its metrics and stop signals through the group."""
    import torch.distributed as dist

    overrides = [*base(ctx, "mlp"), "trainer.devices=1"]
    plain = run_figures(*train(ctx, overrides, f"{name}-torchrun"))
    backend = "cpu:gloo,cuda:nccl" if ctx.device == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    try:
        fig = run_figures(*train(ctx, overrides, name))
    finally:
        torn_down = not dist.is_initialized()  # trainkit's CLI path ends the group it found (engine.distributed)
        if not torn_down:
            dist.destroy_process_group()
    problems = learned(ctx, fig) + ([] if fig["ddp"] else ["the model was not wrapped in DistributedDataParallel"])
    figures = {**fig, "backend": backend, "world_size": os.environ.get("WORLD_SIZE"),
               "torchrun_alone_wraps_in_ddp": plain["ddp"], "group_destroyed_by_trainkit": torn_down,
               "torchrun_alone_samples_per_s_last_epoch": plain["samples_per_s_last_epoch"]}
    return {"passed": not problems, "figures": figures, "error": "; ".join(problems) or None}


def deterministic_resume(ctx: Ctx, name: str) -> dict[str, Any]:
    """trainer.deterministic=true: N epochs straight against N/2 epochs, then resume=<that run> to N. The last
    checkpoints' weights ("modules" state dicts) must be bitwise equal."""
    import torch

    from trainkit.engine.checkpoint import load

    n = 2 if ctx.quick else 4
    overrides = [*base(ctx, "cnn"), "trainer.deterministic=true"]
    if not ctx.quick:
        overrides.append("trainer.limit_train_batches=100")
    straight, _ = train(ctx, [*overrides, f"trainer.max_epochs={n}"], f"{name}-straight")
    half, _ = train(ctx, [*overrides, f"trainer.max_epochs={n // 2}"], f"{name}-half")
    resumed, probe = train(ctx, [*overrides, f"trainer.max_epochs={n}", f"resume={half['run_dir']}"],
                           f"{name}-resume")
    a = load(Path(straight["checkpoints"]["last"]))["modules"]
    b = load(Path(resumed["checkpoints"]["last"]))["modules"]
    compared, unequal, max_diff = 0, [], 0.0
    for module in a:
        for key, t in a[module].items():
            u = b[module][key]
            compared += 1
            if not torch.equal(t, u):
                unequal.append(f"{module}.{key}")
                if t.is_floating_point():
                    max_diff = max(max_diff, float((t.float() - u.float()).abs().max()))
    figures = {"epochs": n, "resumed_after": n // 2, "tensors_compared": compared, "unequal": unequal[:20],
               "max_abs_diff": max_diff, "epochs_straight": straight["epochs"], "epochs_resumed": resumed["epochs"],
               "deterministic": probe.info.get("deterministic"), "val_acc": resumed["final"].get("val/acc")}
    problems = []
    if straight["epochs"] != n or resumed["epochs"] != n:
        problems.append(f"epochs: straight {straight['epochs']}, resumed {resumed['epochs']}, expected {n}")
    if unequal:
        problems.append(f"{len(unequal)} of {compared} weight tensors differ (max |diff| {max_diff:.3g})")
    if not compared:
        problems.append("no weights compared")
    return {"passed": not problems, "figures": figures, "error": "; ".join(problems) or None}


def throughput(ctx: Ctx, name: str) -> dict[str, Any]:
    """benchmarks/run.py's throughput section on this device: trainkit against the hand-written loops, epochs
    interleaved; the figure is trainkit / the best loop (fused Adam, indexed tensors), median and paired."""
    out = Path(ctx.logs) / "gpu_throughput.json"
    out.unlink(missing_ok=True)
    cmd = [PY, str(HERE / "run.py"), "--only", "throughput", "--device", ctx.device, "--mnist-csv", ctx.mnist,
           "--cases", "mlp:128,mlp:1024,cnn:128,cnn:1024", "--epochs", "15", "--out", str(out)]
    if ctx.quick:
        cmd.append("--quick")
    if ctx.device == "cpu":
        cmd += ["--threads", "1"]
    proc = subprocess.run(cmd, cwd=ctx.work, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"run.py exited {proc.returncode}: {(proc.stdout + proc.stderr)[-3000:]}")
    result = json.loads(out.read_text())["throughput"]
    cases = {}
    for c in result["cases"]:
        m = c["median_samples_per_s"]
        cases[f"{c['model']}:{c['batch_size']}"] = {
            "trainkit_samples_per_s": m["trainkit"], "best_loop_samples_per_s": m["indexed_fused"],
            "minimal_loop_samples_per_s": m["indexed"], "ratio_vs_best": c["ratio_vs_indexed_fused"],
            "paired_ratio_vs_best": c["paired_ratio_vs_indexed_fused"], "ratio_vs_minimal": c["ratio_vs_indexed"],
            "load_avg": c["load_avg"]}
    bad = [k for k, v in cases.items() if not math.isfinite(v["paired_ratio_vs_best"])]
    figures = {"epochs": result["epochs"], "device": result["device"], "cases": cases, "json": str(out)}
    return {"passed": bool(cases) and not bad, "figures": figures,
            "error": f"no finite ratio for {bad}" if bad else (None if cases else "no cases measured")}


# experiment=cifar10_fast at airbench's size (width 64, stages [1, 4, 4]) in bf16 on the GPU
CIFAR_GPU = ["experiment=cifar10_fast", "model.width=64", "model.stages=[1,4,4]", "trainer.precision=bf16-mixed",
             "trainer.progress=none", "trainer.tensorboard=false"]


def cifar10_fast(ctx: Ctx, name: str) -> dict[str, Any]:
    """experiment=cifar10_fast at GPU width: the seconds of training (validation and checkpoints included, the
    test passes that find the moment not) until the test accuracy first reaches 94%, airbench's target. Needs the
    real CIFAR-10: CIFAR_ROOT=DIR holds cifar-10-batches-py/ (with test_batch; without it, a fifth of the
    training images is held back as the test split)."""
    import torch

    from trainkit.engine.loop import evaluate
    from trainkit.trainer import Callback

    root = os.environ.get("CIFAR_ROOT")
    if not root:
        return {"passed": True, "figures": {"skipped": True}, "error": None,
                "note": "not run: CIFAR_ROOT=DIR (the folder that holds cifar-10-batches-py/) is not set"}
    has_test = (Path(root) / "cifar-10-batches-py" / "test_batch").is_file()

    class TimeTo94(Callback):
        def __init__(self) -> None:
            self.start, self.paused, self.curve = 0.0, 0.0, []

        def on_fit_start(self, trainer: Any) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
            if ctx.device == "cuda":  # the epoch's kernels have finished before the clock is read
                torch.cuda.synchronize()
            begin = time.perf_counter()
            acc = evaluate(trainer.task, trainer.data.test, trainer.opt.autocast, "test/")["test/acc"]
            self.curve.append({"epoch": epoch, "train_s": begin - self.start - self.paused, "test_acc": acc})
            self.paused += time.perf_counter() - begin

    probe = TimeTo94()
    overrides = [*CIFAR_GPU, f"data.root={root}", f"trainer.device={ctx.device}",
                 *([] if has_test else ["data.test_fraction=0.2"])]
    if ctx.quick:
        overrides += ["trainer.max_epochs=3", "trainer.limit_train_batches=20", "model.width=16", "data.batch_size=32"]
    import trainkit

    summary = trainkit.train([*overrides, f"hydra.run.dir={Path(ctx.work) / name}"], callbacks=[probe])
    reached = next((p for p in probe.curve if p["test_acc"] >= 0.94), None)
    figures = {"curve": probe.curve, "seconds_to_94": reached["train_s"] if reached else None,
               "final_test_acc": summary["test"].get("test/acc"), "test_split": "test_batch" if has_test else
               "a fifth of the training images", "overrides": overrides}
    problems = [] if probe.curve and probe.curve[-1]["test_acc"] >= (0.2 if ctx.quick else 0.8) else \
        [f"test/acc {probe.curve[-1]['test_acc'] if probe.curve else None}: the recipe did not learn"]
    return {"passed": not problems, "figures": figures, "error": "; ".join(problems) or None}


CHECKS: dict[str, tuple[Callable[[Ctx, str], dict[str, Any]], int]] = {  # name: (check, timeout in seconds)
    "fp32": (simple("cnn", [], lambda ctx, f: check_precision(f, "32", False)), 120),
    "bf16_mixed": (simple("cnn", ["trainer.precision=bf16-mixed"],
                          lambda ctx, f: check_precision(f, "bf16-mixed", False)), 120),
    "16_mixed": (simple("cnn", ["trainer.precision=16-mixed"],
                        lambda ctx, f: check_precision(f, "16-mixed", True)), 120),
    "on_device_true": (simple("mlp", ["data.on_device=true"], expect_data(True)), 120),
    "on_device_false": (simple("mlp", ["data.on_device=false"], expect_data(False)), 120),
    "channels_last": (simple("cnn", ["trainer.channels_last=true"],
                             lambda ctx, f: [] if f["conv_weights_channels_last"] else
                             ["the conv weights are not channels_last"]), 120),
    "ddp_one_process": (ddp_one_process, 150),
    "deterministic_resume": (deterministic_resume, 180),
    "throughput": (throughput, 300),
    "compile": (simple("cnn", ["trainer.compile=true"],
                       lambda ctx, f: [] if f["compiled"] else ["the modules were not compiled"]), 300),
    "cifar10_fast": (cifar10_fast, 240),
}


def one(name: str, ctx_path: str, result_path: str) -> None:
    """Run one check here and write its result (or its error) as JSON."""
    ctx = Ctx(**json.loads(Path(ctx_path).read_text()))
    os.chdir(ctx.work)
    try:
        result = CHECKS[name][0](ctx, name)
    except BaseException as exc:  # noqa: BLE001 - a check's failure is its result
        result = {"passed": False, "figures": {}, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()[-4000:]}
    Path(result_path).write_text(json.dumps(result, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------------------------------- driver
def environment(device: str) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {"device": device, "torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": cuda,
            "gpu": torch.cuda.get_device_name(0) if cuda else None, "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "load_avg": os.getloadavg()[0]}


def main(out: Path) -> int:
    started = time.perf_counter()
    device = os.environ.get("GPU_CHECK_DEVICE", "cuda")
    quick = os.environ.get("GPU_CHECK_QUICK", "0") not in ("", "0")
    budget = float(os.environ.get("GPU_CHECK_BUDGET_S", "470"))
    only = [s for s in os.environ.get("GPU_CHECK_ONLY", "").split(",") if s]
    work = Path(tempfile.mkdtemp(prefix="trainkit-gpu-check-"))
    logs = out.parent / f"{out.stem}_logs"
    logs.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": quick,
                              "environment": environment(device), "checks": {}}
    mnist = os.environ.get("MNIST_CSV")
    if mnist:
        report["data"] = f"MNIST CSVs from {mnist}"
    else:
        rows = (12_000, 1_000) if quick else (60_000, 10_000)
        t = time.perf_counter()
        mnist = str(work / "mnist_csv")
        write_mnist_csv(Path(mnist), rows)
        report["data"] = (f"generated: {rows[0]:,} + {rows[1]:,} rows of random uint8 pixels, label = the brightest "
                          f"of pixel rows 9..18 ({time.perf_counter() - t:.1f} s to write)")
    print(f"gpu_check on {device}{' (quick)' if quick else ''}: {report['data']}", flush=True)
    ctx_path = work / "ctx.json"
    ctx_path.write_text(json.dumps(Ctx(device, quick, str(Path(mnist).resolve()), str(work), str(logs)).__dict__))
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}  # trainkit must set it itself
    for name, (_, timeout) in CHECKS.items():
        if only and name not in only:
            continue
        left = budget - (time.perf_counter() - started)
        if left < 20:
            report["checks"][name] = {"passed": False, "figures": {}, "seconds": 0.0,
                                      "error": f"not run: the script's budget of {budget:.0f} s was spent"}
            print(f"FAIL {name}: not run (out of time)", flush=True)
            continue
        result_path, log = work / f"{name}.result.json", logs / f"{name}.log"
        cmd = [PY, str(Path(__file__).resolve()), "one", name, str(ctx_path), str(result_path)]
        if name == "ddp_one_process":
            cmd = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *cmd[1:]]
        t = time.perf_counter()
        try:
            with open(log, "w") as f:
                code = subprocess.run(cmd, cwd=work, stdout=f, stderr=subprocess.STDOUT, env=env,
                                      timeout=min(timeout, left - 5)).returncode
            result = (json.loads(result_path.read_text()) if result_path.is_file() else
                      {"passed": False, "figures": {}, "error": f"exited {code} without a result: "
                                                                f"{log.read_text()[-2000:]}"})
        except subprocess.TimeoutExpired:
            result = {"passed": False, "figures": {}, "error": f"timed out after {min(timeout, left - 5):.0f} s"}
        result["seconds"] = round(time.perf_counter() - t, 1)
        report["checks"][name] = result
        print(f"{'PASS' if result['passed'] else 'FAIL'} {name} ({result['seconds']:.0f} s): "
              f"{summary_line(name, result)}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")  # after each check: nothing lost
    failed = [k for k, v in report["checks"].items() if not v["passed"]]
    report.update(failed=failed, passed=not failed, seconds=round(time.perf_counter() - started, 1))
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if os.environ.get("GPU_CHECK_KEEP", "0") in ("", "0"):
        shutil.rmtree(work, ignore_errors=True)
    names = f": {', '.join(failed)}" if failed else ""
    print(f"{len(report['checks']) - len(failed)} passed, {len(failed)} failed{names} in {report['seconds']:.0f} s; "
          f"written: {out} (logs in {logs})", flush=True)
    return 1 if failed else 0


def summary_line(name: str, result: dict[str, Any]) -> str:
    f = result.get("figures") or {}
    if name == "throughput" and f.get("cases"):
        text = ", ".join(f"{k} {v['ratio_vs_best']:.3f} (paired {v['paired_ratio_vs_best']:.3f})"
                         for k, v in f["cases"].items())
        text = f"trainkit / best hand-written loop: {text}"
    elif name == "deterministic_resume" and "tensors_compared" in f:
        text = f"{f['tensors_compared'] - len(f['unequal'])} of {f['tensors_compared']} weight tensors bitwise equal"
    elif name == "cifar10_fast" and "curve" in f:
        text = (f"test/acc {f['final_test_acc']:.4f}; 94% after {f['seconds_to_94']:.1f} s of training"
                if f["seconds_to_94"] is not None else f"test/acc {f['final_test_acc']:.4f}; 94% not reached")
    elif name == "cifar10_fast" and f.get("skipped"):
        text = result.get("note", "")
    elif "samples_per_s_last_epoch" in f:
        text = (f"val/acc {f['val_acc']:.3f}, {f['samples_per_s_last_epoch']:,.0f} samples/s"
                + (f", DDP {f['ddp']} (torchrun alone: {f['torchrun_alone_wraps_in_ddp']})" if "backend" in f else ""))
    else:
        text = ""
    return text + (f"  error: {result['error']}" if result.get("error") else "")


if __name__ == "__main__":
    if sys.argv[1:2] == ["one"]:
        one(*sys.argv[2:5])
    elif len(sys.argv) == 2:
        sys.exit(main(Path(sys.argv[1])))
    else:
        sys.exit(__doc__)
