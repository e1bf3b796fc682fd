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
    """One split of a restored run, ready to be judged (by the task's `report`)."""

    task: Any  # a restored task, modules in eval mode
    loader: Iterable  # normalized (x, y) batches of the split, in the split's order
    raw: Tensor  # the evaluated samples' x as stored (uint8 pixels, or float values), in loader order
    targets: Tensor  # their y as stored, same order
    meta: DataMeta
    split: str  # "test" or "val": the prefix of every metric name
    autocast: Callable[[], ContextManager[Any]]
    limit: int | None = None  # at most this many batches (trainer.limit_eval_batches)
    train: Split | None = None  # the training split as stored, where the report wants it and it can be read
    # Another checkpoint's task, restored in eval mode (e.g. a GAN's judge: a classifier of the same data).
    restore: Callable[[str], Any] | None = None


@dataclass
class NoOptions:
    """The `eval.*` options of a task whose report has none."""


@dataclass
class ReportTable:
    """A table of a report, which `trainkit eval` prints under its metrics."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    right: list[str] = field(default_factory=list)  # the columns aligned right (numbers)


@dataclass
class Report:
    scalars: dict[str, float] = field(default_factory=dict)  # "split/name" → value: table, JSON, TensorBoard
    details: dict[str, Any] = field(default_factory=dict)  # the rest of the numbers, JSON-ready
    images: dict[str, Image.Image] = field(default_factory=dict)  # file stem → picture
    notes: list[str] = field(default_factory=list)  # lines for the console
    tables: list[ReportTable] = field(default_factory=list)  # printed under the metrics


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
