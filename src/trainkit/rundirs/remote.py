"""Run directories on object storage (s3://, and any fsspec URL): a run writes into a local staging folder, and a
mirror uploads each file there as it completes. The staging folder knows its URL (the `.remote` file in it)."""

from __future__ import annotations

from pathlib import Path

MARKER = ".remote"  # in a staging folder: the URL it mirrors; never uploaded


def is_url(value: str | Path) -> bool:
    """Whether `value` names object storage (`s3://bucket/key`, `gs://...`), not a local path."""
    text = str(value)
    return "://" in text and not text.startswith("file://")


def url_of(run_dir: str | Path) -> str | None:
    """The URL that the local staging folder `run_dir` (or a folder above it: a sweep's) mirrors; None for a plain
    local folder. A sweep job's folder `STAGING/3_lr=0.1` mirrors `URL/3_lr=0.1`."""
    here = Path(run_dir).absolute()
    for folder in (here, *here.parents):
        marker = folder / MARKER
        if marker.is_file():
            base = marker.read_text().strip().rstrip("/")
            rel = here.relative_to(folder).as_posix()
            return base if rel == "." else f"{base}/{rel}"
    return None
