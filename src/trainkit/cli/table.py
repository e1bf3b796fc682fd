"""The command table: every `trainkit` subcommand, its usage line, its config and the function that runs it.

A command's module is imported only when it runs, so `trainkit --help` imports neither torch nor Hydra.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Command:
    """One `trainkit` subcommand. A Hydra command has configs/<config>.yaml and a function
    `fn(cfg, ctx: trainkit.commands.Context) -> result`; a plain command has a function `fn(argv) -> exit code`."""

    usage: str  # what `trainkit --help` shows
    target: str  # "module:function", imported only when the command runs
    config: str | None = None  # Hydra primary config name; None: a plain command
    # Keys under these roots may be missing from the command's own config: `data.x=1` on eval changes the
    # checkpoint's stored config, `eval.x=1` sets an option of the checkpoint's task; they reach Hydra as `++data.x=1`.
    open_roots: tuple[str, ...] = ()
    run_dir: str | None = None  # strftime pattern of a new run directory (as in its config's hydra.run.dir)


# What eval, predict, export and sample may change in a checkpoint's stored recipe.
RECIPE_ROOTS = ("data.", "model.", "optimizer.", "scheduler.", "trainer.", "seed=")

COMMANDS: dict[str, Command] = {
    "train": Command("train a model: trainkit train model=cnn data=cifar10 trainer.max_epochs=5\n"
                     "sweeps: trainkit train -m optimizer=sgd,adam model=mlp,cnn",
                     "trainkit.commands.train:train", config="train", run_dir="outputs/%Y-%m-%d/%H-%M-%S"),
    "eval": Command("evaluate a checkpoint on its test split: trainkit eval ckpt=outputs/.../checkpoints/best.ckpt",
                    "trainkit.commands.evaluate:run_eval", config="eval", open_roots=(*RECIPE_ROOTS, "eval."),
                    run_dir="outputs/eval/%Y-%m-%d/%H-%M-%S"),
    "data check": Command("check a data set before training on it: trainkit data check data=mnist_csv data.train_csv=PATH",
                          "trainkit.commands.data:check", config="data_check"),
    "data prepare": Command("write MNIST CSV files from the IDX files: trainkit data prepare mnist-csv --source DIR "
                            "--out DIR [--download]", "trainkit.commands.data:prepare"),
    "predict": Command("run a model on new data: trainkit predict ckpt=.../best.ckpt input=test.csv (or a folder of images)",
                       "trainkit.commands.predict:run_predict", config="predict", open_roots=RECIPE_ROOTS,
                       run_dir="outputs/predict/%Y-%m-%d/%H-%M-%S"),
    "export": Command("write a self-contained model file: trainkit export ckpt=... format=torchscript|torch_export|onnx",
                      "trainkit.commands.export:run_export", config="export", open_roots=RECIPE_ROOTS,
                      run_dir="outputs/export/%Y-%m-%d/%H-%M-%S"),
    "sample": Command("draw new samples from a GAN as a PNG: trainkit sample ckpt=.../best.ckpt n=64",
                      "trainkit.commands.sample:run_sample", config="sample", open_roots=RECIPE_ROOTS,
                      run_dir="outputs/sample/%Y-%m-%d/%H-%M-%S"),
    "tune": Command("find a learning rate and a batch size for a run: trainkit tune experiment=mnist_mlp "
                    "data.train_csv=PATH [tune.mode=lr|batch|both]",
                    "trainkit.commands.tune:run_tune", config="tune", run_dir="outputs/tune/%Y-%m-%d/%H-%M-%S"),
    "profile": Command("time a short run by phase, with its FLOP/s and a trace: trainkit profile experiment=mnist_fast "
                       "data.train_csv=PATH [profile.steps=50]",
                       "trainkit.commands.profile:run_profile", config="profile",
                       run_dir="outputs/profile/%Y-%m-%d/%H-%M-%S"),
    "runs": Command("list past runs, newest first: trainkit runs [DIR]; two side by side: trainkit runs --compare A B",
                    "trainkit.commands.runs:main"),
    "list": Command("every model, dataset, task, optimizer, scheduler, tracker and cluster environment by name, and "
                    "where each comes from: trainkit list [plugins=[my_project.nets]]", "trainkit.commands.listing:main"),
    "sweep resume": Command("finish a stopped sweep: trainkit sweep resume outputs/multirun/DATE/TIME [--retry-failed]",
                            "trainkit.commands.sweep:main"),
}
SWEEP_DIR = "outputs/multirun/%Y-%m-%d/%H-%M-%S"  # a sweep's directory (as configs/train.yaml's hydra.sweep.dir)


def usage() -> str:
    width = max(map(len, COMMANDS))
    indent = "\n" + " " * (width + 4)
    lines = [f"  {name:<{width}}  {cmd.usage.replace(chr(10), indent)}" for name, cmd in COMMANDS.items()]
    return (
        "usage: trainkit <command> [hydra overrides and flags]\n\ncommands:\n" + "\n".join(lines) + "\n\n"
        "Hydra commands take Hydra's flags: --help (the command's config groups and options), --cfg job\n"
        "(print the composed config), -m/--multirun, --config-dir DIR (your own config groups), --info.\n"
        "--check composes and checks a line (every job of a sweep, -m) and runs nothing.\n"
        "Run `trainkit <command> --help` for a command's options.\n"
    )


def split_command(args: list[str]) -> tuple[str, list[str]] | None:
    """The longest run of leading words that names a command (`data check` before `data`), and the rest."""
    for n in range(min(len(args), 3), 0, -1):
        name = " ".join(args[:n])
        if name in COMMANDS:
            return name, args[n:]
    return None


def load_target(target: str) -> Any:
    """The function a command's `target` ("module:function") names: one of trainkit's own, from the table above."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
