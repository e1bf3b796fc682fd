"""Per-channel normalization statistics from the data config, checked: the batch loader applies them."""

from __future__ import annotations

import math
from collections.abc import Sequence

from trainkit.data.base import DataError


def normalization(
    mean: Sequence[float] | None, std: Sequence[float] | None, channels: int, who: str
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """(mean, std) as tuples of one float per channel, or (None, None): pixels only scaled to 0..1."""
    if mean is None and std is None:
        return None, None
    example = f"data.mean=[{', '.join(['0.5'] * channels)}] data.std=[{', '.join(['0.25'] * channels)}]"
    for key, values in (("data.mean", mean), ("data.std", std)):
        ok = isinstance(values, Sequence) and not isinstance(values, str) and len(values) == channels and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
        if not ok:
            raise DataError(
                f"{who}: {key}={values!r} is not {channels} number(s), one per image channel. Set both "
                f"data.mean and data.std (e.g. {example}), or both to null for no normalization."
            )
    if any(s <= 0 for s in std):  # type: ignore[union-attr]
        raise DataError(f"{who}: data.std={list(std)!r} must be above 0 in every channel, e.g. {example}.")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)  # type: ignore[union-attr]
