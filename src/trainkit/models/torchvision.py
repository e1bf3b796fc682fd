"""torchvision's image classification architectures (`model=torchvision model.arch=resnet18`), sized from the data.

The network is torchvision's own, built by name with `num_classes` = the data's classes; pretrained weights come
through torchvision's own checksummed download, and their 1000-class head is swapped for one of the data's classes.
Around it sit only the adapters a trainkit batch needs: 1-channel images repeated to the 3 channels torchvision
expects, and an optional resize for images smaller than an architecture takes.
"""

from __future__ import annotations

import contextlib
import difflib
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
import torchvision
from torch import Tensor, nn
from torchvision import models

from trainkit.errors import ConfigError

# Other kinds of model torchvision has: named in the error for an architecture that is not a classifier.
OTHER_KINDS = ("detection", "segmentation", "video", "optical_flow", "quantization")
# Square sizes tried for the smallest one an architecture takes (inception_v3 needs 75, ViTs exactly 224 or 384...).
SIZES = (32, 48, 64, 75, 96, 112, 128, 160, 192, 224, 256, 299, 320, 384, 448, 512, 518)
# These two train with auxiliary classifiers and return a tuple in training mode: trainkit's tasks want one tensor.
# init_weights=True: what torchvision does by default, without its warning about the default changing.
NO_AUX = {"googlenet": {"aux_logits": False, "init_weights": True},
          "inception_v3": {"aux_logits": False, "init_weights": True}}
DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation: a network that drops packets fails in seconds, not never


def architectures() -> list[str]:
    """Every classification architecture of torchvision (the names model.arch takes)."""
    return models.list_models(module=models)


class TorchvisionNet(nn.Module):
    """`arch` by name, `weights` null or a name of torchvision's (DEFAULT, IMAGENET1K_V1, ...), `resize` [H, W].
    A wrong key value is a ConfigError naming it; data the network cannot take is a ValueError (build names the
    data). `from_checkpoint` (build's): a checkpoint's state dict replaces the weights, so none are downloaded."""

    def __init__(self, in_shape: tuple[int, ...], num_outputs: int, arch: str = "resnet18", weights: str | None = None,
                 resize: list[int] | None = None, from_checkpoint: bool = False) -> None:
        super().__init__()
        channels, size = _image_shape(in_shape, arch)
        self.arch, self.num_outputs = _known_arch(arch), num_outputs
        chosen = _weights(self.arch, weights) if weights is not None and not from_checkpoint else None
        parts: list[nn.Module] = [ToRGB()] if channels == 1 else []
        if resize is not None:
            size = _size(resize)
            parts.append(nn.Upsample(size=size, mode="bilinear", align_corners=False))
        self.adapt = nn.Sequential(*parts) if parts else nn.Identity()
        self.net = _network(self.arch, num_outputs, chosen, weights)
        _check_input(self, tuple(in_shape), size, resize is not None)

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(self.adapt(x))
        if isinstance(out, Tensor):
            return out
        return out[0]  # TorchScript's googlenet and inception_v3 always return (logits, aux...)


class ToRGB(nn.Module):
    """A grey image as the three equal channels an RGB network expects (a view: no copy)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.expand(-1, 3, -1, -1)


def _image_shape(in_shape: tuple[int, ...], arch: str) -> tuple[int, tuple[int, int]]:
    if len(in_shape) != 3 or in_shape[0] not in (1, 3):
        raise ValueError(f"model=torchvision (model.arch={arch}) needs 1- or 3-channel images (C×H×W); this data has "
                         f"samples of shape {list(in_shape)}.")
    return in_shape[0], (in_shape[1], in_shape[2])


def _known_arch(arch: str) -> str:
    names = architectures()
    if arch in names:
        return arch
    for kind in OTHER_KINDS:
        if arch in models.list_models(module=getattr(models, kind)):
            raise ConfigError(f"model.arch={arch} is a {kind} model (torchvision.models.{kind}); model=torchvision "
                              f"takes image classification architectures only, e.g. resnet18, efficientnet_b0, "
                              f"vit_b_16.")
    close = difflib.get_close_matches(str(arch), names, n=3)
    hint = f"Did you mean {' or '.join(close)}? " if close else ""
    raise ConfigError(f"model.arch={arch} is not one of torchvision {torchvision.__version__}'s {len(names)} "
                      f"classification architectures. {hint}They include resnet18, resnet50, mobilenet_v3_small, "
                      f"efficientnet_b0, convnext_tiny, vit_b_16 and swin_t; "
                      f"`trainkit list` names them all.")


def _weights(arch: str, name: str) -> models.WeightsEnum:
    """torchvision's weights enum member for `model.weights`: DEFAULT, a member name (IMAGENET1K_V1) or its full name
    (ResNet18_Weights.IMAGENET1K_V1)."""
    enum = models.get_model_weights(arch)
    member = str(name).rpartition(".")[2]
    prefix = str(name).rpartition(".")[0]
    found = {m.upper(): m for m in enum.__members__}.get(member.upper())
    if found is None or prefix not in ("", enum.__name__):
        names = ", ".join(m for m in enum.__members__ if m != "DEFAULT")
        raise ConfigError(f"model.weights={name} is not a set of weights of {arch}; its weights are: DEFAULT (= "
                          f"{enum.DEFAULT.name}), {names}; or model.weights=null for none.")
    return enum[found]


def _size(resize: list[int]) -> tuple[int, int]:
    if len(resize) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in resize):
        raise ConfigError(f"model.resize={list(resize)} must be [height, width] in pixels, e.g. model.resize=[64,64] "
                          f"(null: no resize).")
    return resize[0], resize[1]


def _network(arch: str, num_outputs: int, weights: models.WeightsEnum | None, asked: str | None) -> nn.Module:
    """torchvision's network: sized for the data's classes, or pretrained with its head replaced by one that is."""
    if weights is None:
        return _meta_safe(lambda: models.get_model(arch, num_classes=num_outputs, **NO_AUX.get(arch, {})))
    _download(arch, weights, asked)
    with warnings.catch_warnings():
        # build.py's size probe constructs on the meta device: loading weights into it is a no-op torch warns about
        warnings.filterwarnings("ignore", message=".*meta parameter.*no-op")
        net = _meta_safe(lambda: models.get_model(arch, weights=weights, progress=False))
    if arch in NO_AUX:  # their weights come with the auxiliary heads (torchvision refuses aux_logits=False with them)
        net.aux_logits = False
        for name in ("AuxLogits", "aux1", "aux2"):  # unused parameters would stop DDP
            if hasattr(net, name):
                setattr(net, name, None)
    replace_head(net, len(weights.meta["categories"]), num_outputs)
    return net


def _meta_safe(build: Any) -> nn.Module:
    """Build on the current default device. regnet computes its block widths with tensors whose values it reads
    (.tolist()), which the meta device (build.py's free size probe) has none of: those build on the CPU, each
    parameter moved to meta as soon as it exists (initialising 600M parameters would take seconds and GiBs)."""
    try:
        return build()
    except NotImplementedError:
        if torch.empty(0).device.type != "meta":
            raise
        with torch.device("cpu"), _parameters_on_meta():
            return build().to("meta")


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Each parameter and buffer moves to the meta device the moment a module registers it (accelerate's
    init_empty_weights): a layer's own initialisation then costs nothing."""
    register, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None:
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    def buffer_on_meta(module: nn.Module, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        register_buffer(module, name, None if tensor is None else tensor.to("meta"), persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = on_meta, buffer_on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register, register_buffer  # type: ignore


def _download(arch: str, weights: models.WeightsEnum, asked: str | None) -> None:
    """Fetch the weights into torchvision's cache (torch.hub.get_dir()/checkpoints) unless they are there, checking
    the file's hash as torchvision does; no network is an error that says where to put the file by hand."""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    file = checkpoints / Path(weights.url).name
    if file.exists():
        return
    match = torch.hub.HASH_REGEX.search(file.name)  # torch.hub's check_hash: the name carries the sha256's start
    try:
        checkpoints.mkdir(parents=True, exist_ok=True)
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            torch.hub.download_url_to_file(weights.url, str(file), match.group(1) if match else None, progress=False)
    except (URLError, TimeoutError, ConnectionError) as exc:  # no DNS, no route, a refused or silent connection
        said = " ".join(str(getattr(exc, "reason", exc)).split())
        raise ConfigError(
            f"model.weights={asked} for model.arch={arch} needs torchvision's pretrained weights "
            f"({type(weights).__name__}.{weights.name}), and they could not be downloaded from {weights.url} "
            f"({type(exc).__name__}: {said}): this machine seems to have no network. torchvision keeps downloaded "
            f"weights in {checkpoints} (torch.hub.get_dir()/checkpoints; set TORCH_HOME to move it): download that "
            f"URL on a machine with network and place the file there as {file.name}, or train without pretrained "
            f"weights: model.weights=null."
        ) from None
    except RuntimeError as exc:  # torch.hub's hash check: the file it fetched is not the one torchvision published
        raise ConfigError(f"model.weights={asked} for model.arch={arch}: the file downloaded from {weights.url} "
                           f"failed its checksum ({' '.join(str(exc).split())}); nothing was kept. Run again, or "
                           f"train without pretrained weights: model.weights=null.") from None


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torch.hub's urlopen has no timeout: a network that silently drops packets would hang it for ever."""
    before = socket.getdefaulttimeout()
    if before is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def replace_head(net: nn.Module, old_outputs: int, num_outputs: int) -> None:
    """Swap the classifier's last layer (the last nn.Linear in module order, or squeezenet's 1×1 convolution) for
    a freshly initialised one with `num_outputs` outputs."""
    layers = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not layers:  # squeezenet classifies with a convolution to one channel per class, then pools
        layers = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    if not layers or _outputs(layers[-1][1]) != old_outputs:
        raise ConfigError(f"model=torchvision found no final layer with the pretrained weights' {old_outputs} outputs "
                          f"in {type(net).__name__} to replace by one with {num_outputs}; train it without pretrained "
                          f"weights (model.weights=null).")
    name, old = layers[-1]
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_outputs, bias=old.bias is not None)
    else:
        new = nn.Conv2d(old.in_channels, num_outputs, old.kernel_size, old.stride, old.padding,
                        bias=old.bias is not None)
    parent_name, _, child = name.rpartition(".")
    setattr(net.get_submodule(parent_name), child, new.to(old.weight.device))


def _outputs(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _check_input(net: TorchvisionNet, in_shape: tuple[int, ...], size: tuple[int, int], resized: bool) -> None:
    """A batch of the data's shape through the network on the meta device (no memory, no time): images smaller
    than the architecture takes are an error that names both shapes and the model.resize that fits."""
    said = _fails(net, in_shape)
    if said is None:
        return
    fits = next((s for s in SIZES if _fails(net, in_shape, (s, s)) is None), None)
    if fits is None:  # not even the size it was made for: the probe is at fault (an operation meta lacks), not the data
        return
    now = f"model.resize={list(size)}" if resized else f"the data's {in_shape[1]}×{in_shape[2]} images"
    raise ValueError(f"model.arch={net.arch} does not take {now} (samples of shape {list(in_shape)}; torchvision "
                     f"says: {said}). The smallest of the usual square sizes it takes is {fits}×{fits}: set "
                     f"model.resize=[{fits},{fits}] (or larger) to resize inside the model, or give the data images of "
                     f"at least that size.")


def _fails(net: TorchvisionNet, in_shape: tuple[int, ...], resize: tuple[int, int] | None = None) -> str | None:
    """What goes wrong with a batch of two samples of `in_shape` (resized to `resize`), or None when it works."""
    tensors = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    on_meta = {name: torch.empty_like(t, device="meta") for name, t in tensors.items()}  # shapes only: no copy
    was_training = net.training
    net.eval()
    try:
        with torch.device("meta"), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = torch.empty(2, *in_shape)
            if resize is not None:
                x = nn.functional.interpolate(net.adapt(x), size=resize, mode="nearest")
                out = torch.func.functional_call(net.net, _prefixed(on_meta, "net."), (x,))
            else:
                out = torch.func.functional_call(net, on_meta, (x,))
    except (RuntimeError, ValueError, AssertionError, IndexError) as exc:
        return " ".join(str(exc).split())[:200]
    finally:
        net.train(was_training)
    return None if tuple(out.shape) == (2, net.num_outputs) else f"outputs of shape {list(out.shape)}"


def _prefixed(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
