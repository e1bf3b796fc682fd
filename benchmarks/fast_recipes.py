"""Time to accuracy of the fast presets (experiment=mnist_fast, cifar10_fast) on real data, on this machine, and
how close the mnist_gan preset's digits come to real ones.

    .venv/bin/python benchmarks/fast_recipes.py --mnist-csv /tmp/mnist_csv --cifar-root ../shared/data/cifar10
    .venv/bin/python benchmarks/fast_recipes.py --only options --presets mnist_fast    # one section, one preset
    .venv/bin/python benchmarks/fast_recipes.py --quick                                 # tiny: checks the harness

Sections (`--only` picks some):
  curves   each preset through trainkit's Trainer (built from the shipped configs as `trainkit train` builds it)
           against a plain hand-written loop with the same recipe (benchmarks/handwritten.py: `recipe_loop`, the
           same nn.Module, optimizer, schedule, augmentation and test-time flips), in the same run: the test
           accuracy at evenly spaced steps against the seconds of training (the test passes are not counted)
  options  what each option buys: the preset, and the preset with one option switched (label smoothing, test-time
           flips, EMA of the weights, channels_last), each trained to the preset's end; test accuracy and wall time
           (`--option-epochs` shortens the CIFAR-10 runs)
  gan      experiment=mnist_gan run to its end as `trainkit train` runs it, and with one option switched; each judged
           by `trainkit eval eval.feature_ckpt=...` in the features of the mnist_mlp preset's best checkpoint (trained
           here first unless `--feature-ckpt` gives one): the Fréchet distance, its real-vs-real floor, the largest
           share of one class among 10,000 generated digits, and the wall time (`--gan-epochs` shortens the runs;
           not in the default sections: about 20 minutes a run)

CIFAR-10: the 50,000 training images of ../shared/data, a fifth held back as the test split
(data.test_fraction=0.2), as the copy there has no test batch. Writes benchmarks/results/fast_recipes.json,
.md and benchmarks/results/fast_recipes.png (the curves). Take timings on a quiet machine: the load average
before and after each run is recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import RESULTS, TrainkitRun, load_avg, machine, say  # noqa: E402

from trainkit.trainer import Callback  # noqa: E402

QUIET = ["trainer.progress=none", "trainer.tensorboard=false"]
# Each preset against itself with one option switched: name → overrides (digits have no mirror images to flip)
OPTIONS = {
    "label smoothing off": ["task.label_smoothing=0.0"],
    "test-time flips off": ["task.tta_flip=false"],
    "EMA of the weights (decay 0.99 per step)": ["trainer.ema_decay=0.99"],
    "channels_last off": ["trainer.channels_last=false"],
}
CIFAR_ONLY = {"test-time flips off"}
# mnist_gan against itself with one option switched
GAN_OPTIONS = {
    "unconditional": ["model.conditional=false"],
    "dropout 0.3 in the discriminator": ["model.dropout=0.3"],
    "no EMA of the weights": ["trainer.ema_decay=null"],
    "cosine decay of the learning rate": ["scheduler=cosine"],
}


def preset_overrides(name: str, args: argparse.Namespace) -> list[str]:
    if name == "mnist_fast":
        return ["experiment=mnist_fast", f"data.train_csv={args.mnist_csv / 'train.csv'}",
                f"data.test_csv={args.mnist_csv / 'test.csv'}"]
    return ["experiment=cifar10_fast", f"data.root={args.cifar_root}", "data.test_fraction=0.2"]


class TestCurve(Callback):
    """The test accuracy (trainkit's own evaluate, with the task's flips and the EMA weights where set) after the
    chosen steps; the seconds it takes are taken out of the training time."""

    def __init__(self, steps: set[int]) -> None:
        self.steps, self.points, self.paused = steps, [], 0.0
        self.start = 0.0

    def on_fit_start(self, trainer: Any) -> None:
        self.start = time.perf_counter()

    def on_step_end(self, trainer: Any, step: int, metrics: Any) -> None:
        if step in self.steps:
            self.measure(trainer, step)

    def measure(self, trainer: Any, step: int) -> None:
        from contextlib import nullcontext

        from trainkit.engine.loop import evaluate

        begin = time.perf_counter()
        ema = trainer.opt.ema
        with ema.swapped() if ema is not None else nullcontext():
            acc = evaluate(trainer.task, trainer.data.test, trainer.opt.autocast, "test/")["test/acc"]
        self.points.append({"step": step, "train_s": begin - self.start - self.paused, "test_acc": acc})
        self.paused += time.perf_counter() - begin


def trainkit_curve(name: str, args: argparse.Namespace, tmp: Path, points: int) -> tuple[list[dict], Any]:
    extra = ["trainer.max_epochs=1", "trainer.limit_train_batches=20"] if args.quick else []
    probe = TestCurve(set())
    run = TrainkitRun([*preset_overrides(name, args), *QUIET, *extra], tmp / f"curve-{name}", max_epochs=None,
                      callbacks=(probe,))
    total = run.cfg.trainer.max_epochs * min(len(run.loaders["train"]), 20 if args.quick else 10**9)
    probe.steps = {round(total * k / points) for k in range(1, points)}
    run.trainer.fit()
    probe.measure(run.trainer, run.state.step)  # the end of training
    run.close()
    return probe.points, run


def handwritten_curve(run: Any, args: argparse.Namespace, points: int) -> list[dict]:
    """The same recipe as the preset, read from its composed config, by benchmarks/handwritten.py's plain loop."""
    import torch

    import handwritten as hw
    from trainkit.build import build_task

    cfg, data = run.cfg, run.data
    meta = data.meta
    x, y = hw.normalized(data.train.x, meta.mean, meta.std), data.train.y
    xt, yt = hw.normalized(data.test.x, meta.mean, meta.std), data.test.y
    if args.quick:
        x, y = x[:20 * cfg.data.batch_size], y[:20 * cfg.data.batch_size]
    task = cfg.get("task") or {}
    augment = cfg.data.get("augment") or {}
    recipe = hw.Recipe(
        epochs=1 if args.quick else cfg.trainer.max_epochs, batch_size=cfg.data.batch_size, lr=cfg.optimizer.lr,
        momentum=cfg.optimizer.momentum, weight_decay=cfg.optimizer.weight_decay, pct_start=cfg.scheduler.pct_start,
        label_smoothing=task.get("label_smoothing", 0.0), crop_padding=augment.get("crop_padding", 0),
        hflip=augment.get("hflip", False), tta_flip=task.get("tta_flip", False),
        channels_last=cfg.trainer.channels_last, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    net = build_task(cfg, meta).net  # the same nn.Module, freshly initialized
    steps = recipe.epochs * -(-len(x) // recipe.batch_size)
    return hw.recipe_loop(net, x, y, xt, yt, recipe, {round(steps * k / points) for k in range(1, points)})


def curves(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out = {}
    for name in args.presets:
        points = 6 if name == "mnist_fast" else 12
        before = load_avg()
        tk, run = trainkit_curve(name, args, tmp, points)
        middle = load_avg()
        hw = handwritten_curve(run, args, points)
        out[name] = {"trainkit": tk, "handwritten": hw, "load_avg": [before, middle, load_avg()],
                     "train_samples": len(run.data.train.x), "test_samples": len(run.data.test.x)}
        say(f"curves {name}: trainkit {tk[-1]['test_acc']:.4f} after {tk[-1]['train_s']:.1f} s; hand-written "
            f"{hw[-1]['test_acc']:.4f} after {hw[-1]['train_s']:.1f} s (load {before:.2f}, {middle:.2f}, {load_avg():.2f})")
    return out


def options(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from trainkit import train

    out: dict[str, Any] = {}
    for name in args.presets:
        base = [*preset_overrides(name, args), *QUIET]
        if name == "cifar10_fast" and args.option_epochs:
            base.append(f"trainer.max_epochs={args.option_epochs}")
        if args.quick:
            base += ["trainer.max_epochs=1", "trainer.limit_train_batches=10"]
        variants = {"the preset": [], **{k: v for k, v in OPTIONS.items()
                                         if name == "cifar10_fast" or k not in CIFAR_ONLY}}
        rows = {}
        for k, (variant, extra) in enumerate(variants.items()):
            before = load_avg()
            start = time.perf_counter()
            summary = train([*base, *extra, f"hydra.run.dir={tmp / 'options' / name / str(k)}"])
            rows[variant] = {"overrides": extra, "test_acc": summary["test"]["test/acc"],
                             "wall_s": time.perf_counter() - start, "run_wall_s": summary.get("wall_time_s"),
                             "load_avg": [before, load_avg()]}
            say(f"options {name} / {variant}: test/acc {rows[variant]['test_acc']:.4f} in {rows[variant]['wall_s']:.1f} s"
                f" (load {before:.2f})")
        out[name] = rows
    return out


def gan(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import subprocess

    from trainkit import train

    data = [f"data.train_csv={args.mnist_csv / 'train.csv'}", f"data.test_csv={args.mnist_csv / 'test.csv'}"]
    feature = args.feature_ckpt
    if feature is None:  # the judge: the mnist_mlp preset's best checkpoint
        quick = ["trainer.max_epochs=1"] if args.quick else []
        summary = train(["experiment=mnist_mlp", *data, *QUIET, *quick, f"hydra.run.dir={tmp / 'judge'}"])
        feature = tmp / "judge" / "checkpoints" / "best.ckpt"
        say(f"gan: the judge (mnist_mlp) has test/acc {summary['test']['test/acc']:.4f}")
    base = ["experiment=mnist_gan", *data, *QUIET]
    if args.gan_epochs:
        base.append(f"trainer.max_epochs={args.gan_epochs}")
    if args.quick:
        base += ["trainer.max_epochs=1", "trainer.limit_train_batches=10"]
    rows: dict[str, Any] = {"feature_ckpt": str(feature)}
    for k, (variant, extra) in enumerate({"the preset": [], **GAN_OPTIONS}.items()):
        if k and args.quick:
            break
        run_dir = tmp / "gan" / str(k)
        before = load_avg()
        start = time.perf_counter()
        summary = train([*base, *extra, f"hydra.run.dir={run_dir}"])
        wall = time.perf_counter() - start
        after = load_avg()
        subprocess.run([sys.executable, "-m", "trainkit", "eval", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}",
                        f"eval.feature_ckpt={feature}", f"hydra.run.dir={run_dir / 'eval'}"], check=True,
                       stdout=subprocess.DEVNULL)
        report = json.loads((run_dir / "eval" / "metrics.json").read_text())
        counts = report["report"]["generated_class_histogram"]
        rows[variant] = {"overrides": extra, "fd": report["metrics"]["test/fd"],
                         "fd_train": report["metrics"]["test/fd_train"], "epochs": summary.get("epochs"),
                         "largest_class_share": max(counts.values()) / sum(counts.values()),
                         "class_histogram": counts, "wall_s": wall, "load_avg": [before, after]}
        say(f"gan / {variant}: Fréchet distance {rows[variant]['fd']:.1f} (floor {rows[variant]['fd_train']:.1f}), "
            f"largest class {rows[variant]['largest_class_share']:.1%}, {wall:.0f} s (load {before:.2f}-{after:.2f})")
    return {"mnist_gan": rows}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result.get("curves", {}))
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        c = result["curves"][name]
        for who, style in (("trainkit", "o-"), ("handwritten", "s--")):
            pts = c[who]
            label = "trainkit" if who == "trainkit" else "hand-written loop, same recipe"
            ax.plot([p["train_s"] for p in pts], [100 * p["test_acc"] for p in pts], style, label=label)
        target = 99.0 if name == "mnist_fast" else 80.0
        ax.axhline(target, color="grey", lw=0.8, ls=":")
        ax.set_title(f"experiment={name}")
        ax.set_xlabel("seconds of training (2 CPU cores)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(max(0.0, target - 25 if name != "mnist_fast" else 95.0), 100)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Fast recipes: time to accuracy", "",
             f"Machine: {result['machine']['cpus']} cores ({result['machine']['cpu']}), torch "
             f"{result['machine']['torch']}, {result['machine']['torch_threads']} torch threads. Written by "
             f"`benchmarks/fast_recipes.py`.", ""]
    for name, c in result.get("curves", {}).items():
        lines += [f"## {name}: test accuracy against seconds of training (load {c['load_avg'][0]:.2f}–"
                  f"{c['load_avg'][-1]:.2f})", "", "| step | trainkit s | trainkit test acc | hand-written s | "
                  "hand-written test acc |", "|---:|---:|---:|---:|---:|"]
        for a, b in zip(c["trainkit"], c["handwritten"]):
            lines.append(f"| {a['step']} | {a['train_s']:.1f} | {a['test_acc']:.4f} | {b['train_s']:.1f} | "
                         f"{b['test_acc']:.4f} |")
        lines.append("")
    for name, rows in result.get("options", {}).items():
        lines += [f"## {name}: one option switched at a time", "", "| variant | test acc | wall s | load |",
                  "|---|---:|---:|---|"]
        for variant, r in rows.items():
            if not isinstance(r, dict):  # measured_at, quick
                continue
            lines.append(f"| {variant} (`{' '.join(r['overrides']) or 'as shipped'}`) | {r['test_acc']:.4f} | "
                         f"{r['wall_s']:.1f} | {r['load_avg'][0]:.2f}–{r['load_avg'][1]:.2f} |")
        lines.append("")
    for name, rows in result.get("gan", {}).items():
        lines += [f"## {name}: Fréchet distance in the features of `{rows['feature_ckpt']}` (lower is better)", "",
                  "| variant | epochs | Fréchet distance | real-vs-real floor | largest class | wall s | load |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for variant, r in rows.items():
            if not isinstance(r, dict):
                continue
            lines.append(f"| {variant} (`{' '.join(r['overrides']) or 'as shipped'}`) | {r['epochs']} | "
                         f"{r['fd']:.1f} | {r['fd_train']:.1f} | {r['largest_class_share']:.1%} | {r['wall_s']:.0f} | "
                         f"{r['load_avg'][0]:.2f}–{r['load_avg'][1]:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-csv", type=Path, default=Path("/tmp/mnist_csv"))
    parser.add_argument("--cifar-root", type=Path, default=HERE.parent.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--only", default="curves,options", help="comma-separated sections: curves, options, gan")
    parser.add_argument("--presets", default="mnist_fast,cifar10_fast", help="comma-separated presets")
    parser.add_argument("--option-epochs", type=int, default=None, help="options: CIFAR-10 epochs (default: the preset's)")
    parser.add_argument("--gan-epochs", type=int, default=None, help="gan: epochs of each run (default: the preset's)")
    parser.add_argument("--feature-ckpt", type=Path, default=None, help="gan: the judge (default: train mnist_mlp)")
    parser.add_argument("--quick", action="store_true", help="tiny runs: check the harness, not the figures")
    parser.add_argument("--out", type=Path, default=RESULTS / "fast_recipes.json")
    args = parser.parse_args()
    args.mnist_csv, args.cifar_root = args.mnist_csv.resolve(), args.cifar_root.resolve()
    args.presets = [p for p in args.presets.split(",") if p]
    if ("mnist_fast" in args.presets or "gan" in args.only) and not (args.mnist_csv / "train.csv").is_file():
        raise SystemExit(f"no {args.mnist_csv / 'train.csv'}: run `trainkit data prepare mnist-csv --source "
                         f"../shared/data/mnist --out {args.mnist_csv}` first.")
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result["machine"] = machine()
    with tempfile.TemporaryDirectory(prefix="trainkit-fast-") as tmp:
        for section in ("curves", "options", "gan"):
            if section in args.only.split(","):
                value = globals()[section](args, Path(tmp))
                entry = result.setdefault(section, {})
                for preset, figures in value.items():  # a re-run preset replaces its own entry only
                    entry[preset] = {**figures, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                                     "quick": args.quick} if isinstance(figures, dict) else figures
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    args.out.with_suffix(".md").write_text(markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
