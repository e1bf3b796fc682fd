"""Optional extras: what a command line or an option needs that `pip install trainkit` does not bring, checked
before anything runs, with the exact install command in the error."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from trainkit.errors import UserError

# Hydra plugins that trainkit's `sweep` extra installs: (group, option) → the module that provides it.
EXTRA_PLUGINS = {
    ("sweeper", "optuna"): ("optuna", "Optuna (optuna)"),
    ("launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "Hydra's joblib launcher (hydra-joblib-launcher)"),
}


class MissingExtra(UserError):
    """A package that an optional extra of trainkit provides (a Hydra plugin, ONNX) is not installed."""


ONNX_PACKAGES = ("onnx", "onnxscript")  # torch.onnx.export (the dynamo exporter) needs both


def require_extras(args: list[str], config_dir: Path) -> None:
    """Refuse, naming the extra to install, a command line that needs a Hydra plugin trainkit[sweep] provides."""
    for arg in args:
        for group, option in _needed_plugins(arg, config_dir):
            if (group, option) not in EXTRA_PLUGINS:
                continue
            module, what = EXTRA_PLUGINS[(group, option)]
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                raise MissingExtra(f"{arg} needs {what}, which is not installed: it comes with trainkit's optional "
                                   f"`sweep` extra. Install it with: pip install 'trainkit[sweep]' (in a source "
                                   f"checkout: pip install -e '.[sweep]').")


def require_onnx() -> None:
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(
            f"format=onnx needs the optional ONNX packages, and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed. Install them with "
            f'pip install -e ".[onnx]" in a trainkit checkout (or pip install "trainkit[onnx]"), or export '
            f"with format=torch_export, which needs nothing more."
        )


def _needed_plugins(arg: str, config_dir: Path) -> list[tuple[str, str]]:
    key, _, value = arg.lstrip("+~").partition("=")
    if key in ("hydra/sweeper", "hydra/launcher"):
        return [(key.split("/")[1], value)]
    if key == "hparams_search" and (config_dir / "hparams_search" / f"{value}.yaml").is_file():
        text = (config_dir / "hparams_search" / f"{value}.yaml").read_text()
        return re.findall(r"^\s*-\s*override\s+/hydra/(sweeper|launcher)\s*:\s*(\w+)", text, re.M)
    return []


def require_module(module: str, what: str, extra: str) -> None:
    """`what` (e.g. logger=mlflow) needs `module`, which trainkit's optional extra `extra` installs."""
    if importlib.util.find_spec(module) is None:
        raise MissingExtra(
            f"{what} needs the {module} package, which is not installed: it comes with trainkit's optional "
            f"`{extra}` extra. Install it with pip install \"trainkit[{extra}]\" (in a source checkout: pip install "
            f"-e \".[{extra}]\"), or choose another, e.g. logger=tensorboard."
        )
