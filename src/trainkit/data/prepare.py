"""Writes MNIST as CSV files in every layout mnist_csv reads, from the original IDX files (gzipped or not).

Finding, checking and (through torchvision, checksummed) downloading the IDX files is here; printing is not.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainkit.data.base import DataError, regular_file

IDX_FILES = {  # what a split needs: glob patterns of the IDX files (original names, and the "x.idx3-ubyte" renames)
    "train_images": "train-images[-.]idx3-ubyte", "train_labels": "train-labels[-.]idx1-ubyte",
    "test_images": "t10k-images[-.]idx3-ubyte", "test_labels": "t10k-labels[-.]idx1-ubyte",
}
PIXEL_NAMES = [f"pixel{i}" for i in range(784)]


@dataclass(frozen=True)
class Written:
    path: Path
    layout: str
    rows: int
    labeled: bool


def prepare_mnist_csv(source: Path, out: Path, download: bool = False) -> list[Written]:
    """train.csv/test.csv (Kaggle layout, both labeled), test_unlabeled.csv (Kaggle's test layout: no label
    column) and mnist_train.csv/mnist_test.csv (headerless) in `out`, from the IDX files in or under `source`."""
    if download:
        download_mnist(source)
    files = find_idx(source)
    splits = {split: (read_idx(files[f"{split}_images"], 3), read_idx(files[f"{split}_labels"], 1))
              for split in ("train", "test")}
    for split, (images, labels) in splits.items():
        _check_pair(files[f"{split}_images"], images, files[f"{split}_labels"], labels)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"data prepare: cannot create the output folder {out} ({err}). Choose another --out.") from None
    written = []
    for split, (images, labels) in splits.items():
        rows = np.column_stack([labels, images.reshape(len(images), -1)])
        written.append(write_csv(out / f"{split}.csv", rows, ["label", *PIXEL_NAMES], "kaggle"))
        written.append(write_csv(out / f"mnist_{split}.csv", rows, None, "headerless"))
    test_images = splits["test"][0]
    written.append(write_csv(out / "test_unlabeled.csv", test_images.reshape(len(test_images), -1), PIXEL_NAMES,
                          "kaggle_test"))
    return written


def download_mnist(root: Path) -> None:
    """The four IDX files into root/MNIST/raw/ through torchvision, which checks each file's md5."""
    from torchvision.datasets import MNIST  # only here: it is slow to import

    try:
        for train in (True, False):
            MNIST(str(root), train=train, download=True)
    except Exception as err:  # offline, proxy, bad checksum: all end the same for a person
        raise DataError(
            f"data prepare: could not download MNIST into {root / 'MNIST' / 'raw'} ({type(err).__name__}: "
            f"{err}). Without internet, copy the four IDX files (train-images-idx3-ubyte.gz, "
            f"train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) into one "
            f"folder and pass it as --source without --download."
        ) from err


def find_idx(source: Path) -> dict[str, Path]:
    """The four IDX files in `source`, source/raw or source/MNIST/raw (torchvision's layout)."""
    if not source.is_dir():
        raise DataError(f"data prepare: --source {source} is not a folder (resolved to {source.absolute()}). "
                        f"Pass the folder that holds the MNIST IDX files, or add --download to fetch them there.")
    tried = []
    for folder in (source, source / "raw", source / "MNIST" / "raw"):
        found = {what: _one(folder, pattern) for what, pattern in IDX_FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
        tried.append((sum(v is not None for v in found.values()), folder, found))
    _, folder, found = max(tried, key=lambda t: t[0])  # the nearest miss says most
    missing = [IDX_FILES[k].replace("[-.]", "-") for k, v in found.items() if v is None]
    raise DataError(
        f"data prepare: no complete set of MNIST IDX files in {source} (nor in raw/ or MNIST/raw/ below it): "
        f"{folder} lacks {', '.join(missing)}. Pass --source the folder that "
        f"holds train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz) and "
        f"t10k-labels-idx1-ubyte(.gz), or add --download to fetch them into it."
    )


def _one(folder: Path, pattern: str) -> Path | None:
    """The file itself before its .gz: torchvision keeps both after extracting."""
    hits = sorted(folder.glob(pattern)) + sorted(folder.glob(pattern + ".gz"))
    return hits[0] if hits else None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions, checked against its own header."""
    regular_file(path, "data prepare")  # a FIFO named like an IDX file would block read_bytes for ever
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(f"data prepare: {path} could not be read ({type(err).__name__}: {err}); it is truncated "
                        f"or not gzip. Download it again (--download).") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise DataError(f"data prepare: {path} is not an IDX file of {ndim}-D unsigned bytes (its first bytes are "
                        f"{raw[:4].hex()}, expected 000008{ndim:02x}). Download it again (--download).")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    offset, size = 4 + 4 * ndim, int(np.prod(shape))
    if len(raw) != offset + size:
        raise DataError(f"data prepare: {path} holds {len(raw) - offset} data bytes, but its header says "
                        f"{'×'.join(map(str, shape))} = {size}; it is truncated. Download it again (--download).")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def _check_pair(images_path: Path, images: np.ndarray, labels_path: Path, labels: np.ndarray) -> None:
    if images.shape[1:] != (28, 28):
        raise DataError(f"data prepare: {images_path} holds images of {images.shape[1]}×{images.shape[2]} pixels, "
                        f"expected 28×28. Use the original MNIST files.")
    if len(images) != len(labels):
        raise DataError(f"data prepare: {images_path} holds {len(images)} images but {labels_path} holds "
                        f"{len(labels)} labels. Use files from the same download.")
    if labels.size and labels.max() > 9:
        raise DataError(f"data prepare: {labels_path} holds label {labels.max()}, expected 0..9. Use the "
                        f"original MNIST files.")


def write_csv(path: Path, rows: np.ndarray, header: list[str] | None, layout: str) -> Written:
    """uint8 rows as comma-separated whole numbers, under `header` (None: no header line)."""
    names = header or [f"c{i}" for i in range(rows.shape[1])]
    try:
        import polars as pl

        pl.DataFrame(rows, schema=names, orient="row").write_csv(path, include_header=header is not None)
    except ImportError:  # without polars: slower, same bytes
        np.savetxt(path, rows, fmt="%d", delimiter=",", header=",".join(header or []), comments="")
    except OSError as err:
        raise DataError(f"data prepare: cannot write {path} ({err}). Choose another --out.") from None
    return Written(path, layout, len(rows), layout != "kaggle_test")
