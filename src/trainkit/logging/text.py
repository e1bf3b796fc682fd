"""How every command writes paths and numbers on the console: one definition, so tables and lines agree."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from trainkit.storage import url_of


def shown(path: str | Path) -> str:
    """A path as the user can type it from where they ran the command: relative to it when inside it; its URL when it
    is in the local staging folder of object storage (trainkit.storage)."""
    url = url_of(path)
    if url is not None:
        return url
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def number(value: Any) -> str:
    """A metric for a table cell: 4 decimals where that reads well, else 4 significant digits; '' for None."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    readable = value == 0 or (math.isfinite(value) and 1e-3 <= abs(value) < 1e5)
    return f"{value:.4f}" if readable else f"{value:.4g}"
