"""A batch of inputs as a captioned picture: what the model is fed, for a person to look at before training.

It draws what it is given (the loader's `preview()` gives the first training batch); saving is the caller's.
"""

from __future__ import annotations

from PIL import Image
from torch import Tensor

from trainkit.data.base import DataMeta
from trainkit.reports.base import class_names, pixels01
from trainkit.reports.render import image_grid


def input_grid(x: Tensor, y: Tensor, meta: DataMeta, max_images: int = 64) -> Image.Image | None:
    """The first `max_images` samples of `x` (stored values: uint8 pixels, before scaling and normalization),
    each captioned with its label: the class name (meta.class_names, else the index) or the target values.
    None when the samples are not images (meta.in_shape is not C×H×W): a grid of numbers shows nothing."""
    if len(meta.in_shape) != 3:
        return None
    x, y = x[:max_images].cpu(), y[:max_images].cpu()
    names = None if y.is_floating_point() else class_names(meta)  # class indices, or target values
    return image_grid(pixels01(x, meta), [_caption(label, names) for label in y])


def _caption(label: Tensor, names: list[str] | None) -> str:
    if names is not None and label.dim() == 0:
        index = int(label)
        return names[index] if 0 <= index < len(names) else str(index)  # a label out of range is shown as is
    return " ".join(f"{v:.3g}" for v in label.flatten().tolist())
