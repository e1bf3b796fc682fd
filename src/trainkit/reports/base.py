"""What a report is given and what it gives back; the eval command writes the result out."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ContextManager

from PIL import Image
from torch import Tensor

from trainkit.data.base import DataMeta, Split


@dataclass
class EvalInputs:
    """One split of a restored run, ready to be judged."""

    task: Any  # a restored task, modules in eval mode
    loader: Iterable  # normalized (x, y) batches of the split, in the split's order
    raw: Tensor  # the evaluated samples' x as stored (uint8 pixels, or float values), in loader order
    targets: Tensor  # their y as stored, same order
    meta: DataMeta
    split: str  # "test" or "val": the prefix of every metric name
    autocast: Callable[[], ContextManager[Any]]
    limit: int | None = None  # at most this many batches (trainer.limit_eval_batches)
    train: Split | None = None  # the training split as stored, where the report wants it and it can be read


@dataclass
class EvalOptions:
    """`eval.*`: what a report shows beyond its numbers."""

    misclassified: int = 32  # classification: the most confidently misclassified images in misclassified.png
    samples: int = 64  # GAN: generated images in samples.png
    feature_ckpt: str | None = None  # GAN on images: a classifier checkpoint trained on the same data
    feature_task: Any = None  # that checkpoint, restored (the eval command restores it; the GAN checks it)


@dataclass
class Report:
    scalars: dict[str, float] = field(default_factory=dict)  # "split/name" → value: table, JSON, TensorBoard
    details: dict[str, Any] = field(default_factory=dict)  # the rest of the numbers, JSON-ready
    images: dict[str, Image.Image] = field(default_factory=dict)  # file stem → picture
    notes: list[str] = field(default_factory=list)  # lines for the console


@dataclass
class Drawn:
    """What `trainkit sample` writes: a picture, and for samples that are numbers the numbers as a table."""

    image: Image.Image
    table: tuple[list[str], list[list[str]]] | None = None  # (header, rows) → a CSV beside the picture


def class_names(meta: DataMeta) -> list[str]:
    return list(meta.class_names) if meta.class_names else [str(i) for i in range(meta.num_outputs)]


def pixels01(raw: Tensor, meta: DataMeta) -> Tensor:
    """Stored images as float in [0, 1], for pictures."""
    return (raw.float() / meta.scale).clamp(0, 1)
