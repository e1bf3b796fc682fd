"""`trainkit export ckpt=PATH format=torchscript|torch_export|onnx`: one self-contained model file that loads
without trainkit: TorchScript (`torch.jit.load`), a `.pt2` ExportedProgram (`torch.export.load`) or ONNX.

What goes into the file is the task's to say (`Task.deployable`, `Task.describe`): a classifier or regression
takes raw values (pixels 0..255, x values) with the normalization inside; a GAN exports its generator, latent
noise in, samples in raw units out. The batch size is free. After writing, the command reloads the file and
checks it against the model it came from.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from torch import Tensor, nn

from trainkit.build import not_the_checkpoint
from trainkit.commands import Context
from trainkit.errors import ConfigError
from trainkit.extras import require_onnx
from trainkit.logging.text import shown
from trainkit.restore import Restored, restore, task_member

FORMATS = {"torchscript": ".pt", "torch_export": ".pt2", "onnx": ".onnx"}
LOADERS = {
    "torchscript": 'torch.jit.load("{path}")',
    "torch_export": 'torch.export.load("{path}").module()',
    "onnx": 'onnxruntime.InferenceSession("{path}").run(None, {{"{name}": {name}}})[0]',
}


def run_export(cfg: DictConfig, ctx: Context) -> dict[str, Any]:
    run_dir, console = ctx.run_dir, ctx.console
    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not an export format; choose format= one of: {', '.join(FORMATS)}.")
    if fmt == "onnx":
        require_onnx()  # before the slow part
    restored = restore(cfg.ckpt, cfg, line=ctx.line)
    output = Path(str(cfg.output)).expanduser() if cfg.get("output") else run_dir / f"model{FORMATS[fmt]}"
    if output.is_dir():
        output = output / f"model{FORMATS[fmt]}"
    not_the_checkpoint(output, restored.path)
    model = task_member(restored, "deployable")().cpu()
    example = task_member(restored, "example_input")(2)
    info = describe(restored, fmt)
    output.parent.mkdir(parents=True, exist_ok=True)
    {"torchscript": _torchscript, "torch_export": _torch_export, "onnx": _onnx}[fmt](model, example, output, info)
    check = task_member(restored, "example_input")(8, seed=1)
    with torch.inference_mode():
        expected = model(check)
    difference = (reload_and_run(fmt, output, check) - expected).abs().max().item()
    result = {"format": fmt, "file": str(output), "max_abs_difference": difference, **info}
    _print(console, result, output, fmt)
    return result


def describe(restored: Restored, fmt: str) -> dict[str, Any]:
    """What a user of the file needs to know; stored inside it (trainkit.json) and printed."""
    from trainkit.version import __version__

    return {
        "trainkit_version": __version__, "checkpoint": str(restored.path), "epoch": restored.epoch,
        "data": restored.meta.name, "model": OmegaConf.select(restored.recipe, "model.name"),
        **task_member(restored, "describe")(uint8_input=fmt == "torchscript"),  # TorchScript's takes uint8 too
    }


def _torchscript(model: nn.Module, example: Tensor, output: Path, info: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))  # TorchScript is deprecated in torch 2.10+
        scripted = torch.jit.script(model)
        scripted.save(str(output), _extra_files={"trainkit.json": json.dumps(info)})


def _exported(model: nn.Module, example: Tensor) -> torch.export.ExportedProgram:
    """The graph with a free batch size. Strict (TorchDynamo) tracing keeps `len(z)` in the generator
    symbolic, where the non-strict default would fix the batch size to the example's."""
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=True)


def _torch_export(model: nn.Module, example: Tensor, output: Path, info: dict[str, Any]) -> None:
    torch.export.save(_exported(model, example), str(output), extra_files={"trainkit.json": json.dumps(info)})


def _onnx(model: nn.Module, example: Tensor, output: Path, info: dict[str, Any]) -> None:
    import onnx

    name = info["input"]["name"]
    chatter = io.StringIO()  # the exporter narrates each stage on stdout, its optimizer logs at INFO
    with contextlib.redirect_stdout(chatter), warnings.catch_warnings(), _quiet("onnxscript", "onnx_ir", "torch.onnx"):
        warnings.simplefilter("ignore")
        torch.onnx.export(_exported(model, example), (example,), str(output), input_names=[name],
                          output_names=["output"], dynamo=True, external_data=False, verbose=False)
    proto = onnx.load(str(output))
    onnx.helper.set_model_props(proto, {"trainkit.json": json.dumps(info)})
    onnx.save(proto, str(output))


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def reload_and_run(fmt: str, path: Path, x: Tensor) -> Tensor:
    """Load the written file as a user would and run it on `x`."""
    if fmt == "onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            return torch.full((1,), float("nan"))  # reported as "not checked"
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        loaded = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()
        return loaded(x)


def _print(console: Console, result: dict[str, Any], output: Path, fmt: str) -> None:
    size = output.stat().st_size / 2**20
    shape = lambda s: "×".join(map(str, s))  # noqa: E731
    console.print(f"exported [bold]{shown(output)}[/bold] ({fmt}, {size:.2f} MiB): {result['data']} "
                  f"{result['model']}, epoch {result['epoch']}", highlight=False)
    i, o = result["input"], result["output"]
    console.print(f"  input  {i['name']}: {i['dtype']} {shape(i['shape'])}, {i['values']}", highlight=False)
    names = result.get("class_names")
    classes = f" for {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}" if names else ""
    console.print(f"  output: float32 {shape(o['shape'])}, {o['values']}{classes}", highlight=False)
    diff = result["max_abs_difference"]
    if diff != diff:  # NaN: onnxruntime is not installed
        console.print("  not checked: onnxruntime is not installed (pip install onnxruntime)", highlight=False)
    else:
        verdict = "matches trainkit" if diff <= 1e-4 else "[bold red]DIFFERS from trainkit[/bold red]"
        console.print(f"  reloaded and run on 8 inputs: {verdict} (max abs difference {diff:.2g})", highlight=False)
    console.print(f"  load it: {LOADERS[fmt].format(path=shown(output), name=i['name'])}", highlight=False)
