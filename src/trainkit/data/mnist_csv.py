"""Reads MNIST from CSV (Kaggle layout, headerless label-first rows, or an index CSV of PNG files) into uint8 tensors.

It checks every row and names the bad one, and caches what it parsed; the batch loader normalizes and batches.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainkit.data.base import SPLITS, DataError, DataMeta, DataSplits, Split, asked_splits, carve, regular_file
from trainkit.data.cache import cached
from trainkit.data.images import SUFFIXES
from trainkit.data.index_csv import Where, is_index_header, names_image, read_index
from trainkit.data.inputs import DECODE_CHUNK, ImageInputs, Inputs
from trainkit.data.normalization import normalization

PIXELS = 784
IN_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
LAYOUTS = ("auto", "kaggle", "headerless", "index")


@dataclass(frozen=True)
class _Format:
    name: str  # also the cache tag
    header: bool
    labeled: bool
    describe: str  # for messages, so a person can compare with their file

    @property
    def fields(self) -> int:
        return PIXELS + self.labeled


KAGGLE = _Format("kaggle", True, True, "a Kaggle-layout file: header label,pixel0..pixel783")
KAGGLE_TEST = _Format("kaggle_test", True, False, "a Kaggle test file: header pixel0..pixel783, no label column")
HEADERLESS = _Format("headerless", False, True, "a headerless file: on each line a label, then 784 pixel values")
INDEX = _Format("index", True, True, "an index CSV: header filename,label or id,label, then a PNG name per row")


def load(
    train_csv: str,
    test_csv: str | None = None,
    val_fraction: float = 0.1,  # of the train rows, held back for validation
    seed: int = 0,  # of the validation carve
    layout: str = "auto",  # "auto", "kaggle", "headerless" or "index"
    images_dir: str | None = None,  # index layout: the folder of the PNG files; None: found beside the CSV
    cache: bool = True,  # keep parsed files as .npy beside them (or in ~/.cache/trainkit)
    mean: list[float] | None = (0.1307,),  # per channel, of pixels scaled to 0..1; null: no normalization
    std: list[float] | None = (0.3081,),
    *,
    splits: tuple[str, ...] = SPLITS,  # which to return; not a config key: the command knows what it needs
) -> DataSplits:
    """Train and validation from `train_csv`, test from `test_csv` or None; every split labeled.

    Asked for neither train nor val (e.g. evaluation on test), `train_csv` is not opened at all.
    """
    asked = asked_splits(splits, "mnist_csv")
    _check_layout(layout)
    stats = normalization(mean, std, IN_SHAPE[0], "mnist_csv")
    if not 0 < val_fraction < 1:
        raise DataError(
            f"mnist_csv: data.val_fraction={val_fraction!r} must be strictly between 0 and 1: training "
            f"needs a validation split carved from the train rows. Set e.g. data.val_fraction=0.1."
        )
    # val is carved from the train file, and train is what the carve leaves: either needs the whole file.
    carving = bool(asked & {"train", "val"})
    train = val = test = None
    if carving:
        train = _train_rows(train_csv, layout, cache, images_dir)
    if test_csv is not None and "test" in asked:
        test = _test_rows(test_csv, layout, cache, images_dir)
    if carving:
        try:
            train, val = carve(train, val_fraction, seed)
        except DataError as err:
            raise DataError(f"mnist_csv: {train_csv} with data.val_fraction={val_fraction}: {err}") from None
    return DataSplits.asked(asked, train, val, test, _meta(*stats))


def _train_rows(train_csv: str, layout: str, cache: bool, images_dir: str | None) -> Split:
    train = read_split(train_csv, layout, key="data.train_csv", cache=cache, images_dir=images_dir)
    if train.y is None:
        raise DataError(
            f"mnist_csv: {train_csv} has no label column (header pixel0..pixel783, a Kaggle test file, or "
            f"an index CSV without labels), and training needs labels. Set data.train_csv to a labeled file "
            f"(header label,pixel0..pixel783, headerless rows starting with the label, or filename,label)."
        )
    return train


def _test_rows(test_csv: str, layout: str, cache: bool, images_dir: str | None) -> Split:
    test = read_split(test_csv, layout, key="data.test_csv", cache=cache, images_dir=images_dir)
    if test.y is None:
        raise DataError(
            f"mnist_csv: {test_csv} has no label column (like Kaggle's unlabeled test.csv), so it can "
            f"be predicted but not scored: training and eval report test metrics and need labels. Set "
            f"data.test_csv to a labeled file, or data.test_csv=null (validation is carved from train)."
        )
    return test


def read_split(
    path: str, layout: str = "auto", key: str = "data.test_csv", cache: bool = True, images_dir: str | None = None,
) -> Split:
    """One file as a Split: x uint8 N×1×28×28, y int64 N, or None when the file has no labels (a Kaggle
    test.csv, an index CSV without a label column). Public and stable: `trainkit predict` reads with it.

    `key` is the config key that named the file, so an error can say what to change.
    """
    _check_layout(layout)
    file = _existing_file(path, key)
    fmt = _detect(file, layout, key)
    if fmt is INDEX:
        return read_index(file, IN_SHAPE, NUM_CLASSES, Where("mnist_csv", key), images_dir, cache)
    arrays = cached(file, fmt.name, lambda: _parse(file, fmt, key), enabled=cache)
    labels = torch.from_numpy(np.asarray(arrays["y"], dtype=np.int64)) if fmt.labeled else None
    return Split(torch.from_numpy(arrays["x"]), labels)


def find_problems(
    train_csv: str, test_csv: str | None = None, layout: str = "auto", limit: int = 50, **_: object,
) -> list[str]:
    """Every bad row of the CSV files (up to `limit` per file), for `trainkit data check`: one line each."""
    problems = []
    for key, path in (("data.train_csv", train_csv), ("data.test_csv", test_csv)):
        try:
            if path is None:
                continue
            file = _existing_file(path, key)
            fmt = _detect(file, layout, key)
        except DataError as err:
            problems.append(str(err))
            continue
        if fmt is not INDEX:
            problems += [f"{file} line {line} {problem}" for line, problem in _bad_rows(file, fmt, limit)]
    return problems


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise DataError(
            f"mnist_csv: data.layout={layout!r} is not a CSV layout this reader knows. "
            f"Set data.layout to one of {', '.join(LAYOUTS)} (auto tells them apart by the first line)."
        )


def _meta(mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> DataMeta:
    return DataMeta(
        name="mnist_csv", kind="classification", in_shape=IN_SHAPE, num_outputs=NUM_CLASSES,
        class_names=[str(i) for i in range(NUM_CLASSES)], scale=255.0, mean=mean, std=std, target_shape=(),
    )


def _existing_file(path: str, key: str) -> Path:
    file = Path(path).expanduser()
    where = f"{path}" if file.is_absolute() else f"{path} (resolved to {file.absolute()})"
    if file.is_dir():
        inside = sorted(p.name for p in file.glob("*.csv"))[:5]
        hint = f" It holds {', '.join(inside)}." if inside else " It holds no .csv file."
        want = "test" if key == "data.test_csv" else "train"
        example = next((name for name in inside if want in name), f"{want}.csv")
        raise DataError(
            f"mnist_csv: {where} is a directory, not a CSV file.{hint} Set {key} to the file itself, "
            f"e.g. {key}={file.absolute() / example}."
        )
    if file.is_symlink() or file.exists():  # a dangling link, a FIFO or a device: said as what it is
        regular_file(file, f"mnist_csv: {key}")
    if not file.is_file():
        skip = f", or {key}=null to load no test split" if key == "data.test_csv" else ""
        raise DataError(
            f"mnist_csv: {where} does not exist. Set {key} to the path of an MNIST CSV file (Kaggle "
            f"layout with header label,pixel0..pixel783, headerless rows of a label then 784 pixels, or an "
            f"index CSV filename,label beside its PNG images){skip}; `trainkit data prepare mnist-csv` "
            f"writes the CSV files from the original MNIST files."
        )
    return file


def _detect(file: Path, layout: str, key: str) -> _Format:
    """The format from the first line: a header is a line whose first field is not an integer."""
    with open(file, "rb") as f:
        head = f.readline(1 << 16)
    first = head.replace(b"\r", b"\n").split(b"\n")[0]  # old Mac files end lines with \r alone
    if first.startswith(b"\x1f\x8b"):
        raise DataError(
            f"mnist_csv: {file} is gzip-compressed. Unzip it (gunzip {file.name}) and set {key} to the "
            f"uncompressed .csv file."
        )
    if b"\x00" in first:
        raise DataError(
            f"mnist_csv: {file} is not a text CSV file (line 1 holds binary data). Set {key} to an "
            f"MNIST CSV file; for the original IDX files (*-ubyte), `trainkit data prepare mnist-csv "
            f"--source DIR --out DIR` writes CSV files."
        )
    image = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG"}
    kind = next((name for magic, name in image.items() if first.startswith(magic)), None)
    if kind:
        raise DataError(
            f"mnist_csv: {file} is a {kind} image, not a CSV file, whatever its name. Set {key} to an MNIST CSV "
            f"file, or to an index CSV (filename,label) that lists such images."
        )
    if not _is_text(first):
        raise DataError(
            f"mnist_csv: {file} is not a text CSV file (line 1 holds bytes that are not text). Set {key} to an "
            f"MNIST CSV file."
        )
    if b"," not in first and (b";" in first or b"\t" in first):
        sep, char = ("semicolons", ";") if b";" in first else ("tabs", "\\t")
        raise DataError(
            f"mnist_csv: {file} separates its values with {sep}; trainkit reads comma-separated files. Convert "
            f"it, e.g. tr '{char}' ',' < {file.name} > {file.stem}-comma.csv, and set {key} to the new file."
        )
    if not first.strip():
        what = "is empty" if not head else "starts with an empty line 1"
        raise DataError(
            f"mnist_csv: {file} {what}; expected {KAGGLE.describe}, or {HEADERLESS.describe}. "
            f"Set {key} to a file with MNIST rows in it."
        )
    names = [n.strip().strip('"').lower() for n in first.decode("utf-8-sig", "replace").split(",")]
    has_header = _as_int(names[0]) is None
    if layout == "index" or (layout == "auto" and is_index_header(names)):
        if not is_index_header(names):
            raise DataError(
                f"mnist_csv: {file} line 1 is {first[:40].decode('utf-8', 'replace')!r}, but data.layout=index "
                f"expects the header of an index CSV: filename,label or id,label (or the name column alone "
                f"for unlabeled images). Add that header, or set data.layout=auto for a pixel CSV."
            )
        return INDEX
    if layout == "headerless" or (layout == "auto" and not has_header):
        return HEADERLESS
    if not has_header:
        raise DataError(
            f"mnist_csv: {file} line 1 starts with the number {names[0]}, but data.layout=kaggle expects "
            f"line 1 to be the header label,pixel0..pixel783. Set data.layout=headerless (or auto) for "
            f"a file without a header."
        )
    return _header_format(file, names)


def _is_text(line: bytes) -> bool:
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def _header_format(file: Path, names: list[str]) -> _Format:
    if len(names) == PIXELS + 1 and names[0] == "label":
        return KAGGLE
    if len(names) == PIXELS and names[0] != "label":
        return KAGGLE_TEST
    if len(names) <= 2 and names_image(names[0]):
        raise DataError(
            f"mnist_csv: {file} line 1 names an image ({names[0][:40]}) but has no header: an index CSV "
            f"needs the header filename,label (or id,label) on line 1. Add it."
        )
    raise DataError(
        f"mnist_csv: {file} line 1 is a header of {len(names)} fields starting with {names[0][:20]!r}, "
        f"expected label,pixel0..pixel783 (785 names, a labeled file) or pixel0..pixel783 (784 names, "
        f"an unlabeled Kaggle test file). Fix the header, or remove it and set data.layout=headerless."
    )


def _parse(file: Path, fmt: _Format, key: str) -> dict[str, np.ndarray]:
    """x uint8 N×1×28×28 and y uint8 N (when labeled), checked, from one parse of the file.

    polars parses straight into uint8 columns, refusing text, values outside 0..255 and extra fields; what it
    leaves empty (a short row, an empty cell) is null; it is the fastest of the parsers compared in
    benchmarks/README.md (pandas.read_csv, np.loadtxt). Any failure runs the slow line-by-line scan:
    it names the bad row, or finds none, and then np.loadtxt reads the file (it takes lone CR line ends).
    """
    try:
        pixels, labels = _parse_polars(file, fmt)
    except _Unparsed:
        bad = next(_bad_rows(file, fmt, 1), None)
        if bad is not None:
            raise _row_error(file, fmt, *bad) from None
        pixels, labels = _parse_numpy(file, fmt)
    if len(pixels) == 0:
        raise DataError(
            f"mnist_csv: {file} has a header (line 1) but no data rows; expected {fmt.describe}. "
            f"Set {key} to a file with MNIST rows in it."
        )
    if labels is not None and labels.max() >= NUM_CLASSES:
        line, problem = next(_bad_rows(file, fmt, 1), (None, None))
        if line is None:
            raise DataError(f"mnist_csv: {file} has label {labels.max()}, expected 0..9. Fix or remove that row.")
        raise _row_error(file, fmt, line, problem)
    x = pixels.reshape(-1, *IN_SHAPE)
    return {"x": x} if labels is None else {"x": x, "y": labels}


class _Unparsed(Exception):
    """The fast engine could not read the file; the scan says whether the file or the engine is at fault."""


def _parse_polars(file: Path, fmt: _Format) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        import polars as pl
    except ImportError as err:  # a platform without a polars wheel: the numpy engine reads every valid file
        raise _Unparsed("polars is not installed") from err
    schema = {f"c{i}": pl.UInt8 for i in range(fmt.fields)}
    try:  # the header is skipped, not matched: auto-detection already read it, and names may vary in case
        frame = pl.read_csv(file, has_header=False, skip_rows=int(fmt.header), schema=schema,
                            raise_if_empty=False)
    except Exception as err:  # polars reports bad cells, extra fields and odd line ends by many types
        raise _Unparsed(str(err)) from err
    if any(frame.null_count().row(0)):  # a short row, an empty cell, or a blank line: the scan tells which
        raise _Unparsed("empty fields")
    rows = frame.to_numpy()  # column-major, one copy of the columns; made row-major by numpy, which was faster
    labels = np.ascontiguousarray(rows[:, 0]) if fmt.labeled else None
    return np.ascontiguousarray(rows[:, int(fmt.labeled):]), labels


def _parse_numpy(file: Path, fmt: _Format) -> tuple[np.ndarray, np.ndarray | None]:
    """The slower engine, for what polars declines: lone CR line ends, blank lines, or no polars at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "input contained no data": said in words by the caller
        try:
            rows = np.loadtxt(file, delimiter=",", dtype=np.uint8, skiprows=int(fmt.header), ndmin=2,
                              comments=None, encoding="utf-8-sig")
        except ValueError as err:  # also UnicodeDecodeError
            raise _unreadable(file, fmt, str(err)) from None
    if len(rows) and rows.shape[1] != fmt.fields:
        raise _unreadable(file, fmt, f"{rows.shape[1]} fields per row")
    pixels = np.ascontiguousarray(rows[:, int(fmt.labeled):])
    return pixels, (np.ascontiguousarray(rows[:, 0]) if fmt.labeled else None)


def _unreadable(file: Path, fmt: _Format, parser_said: str) -> DataError:
    return DataError(
        f"mnist_csv: {file} could not be read as {fmt.describe}: {parser_said}. Check that it is a "
        f"plain comma-separated text file of whole numbers."
    )


def _row_error(file: Path, fmt: _Format, line: int, problem: str) -> DataError:
    hint = ""
    if line == 1 and fmt is HEADERLESS and "column 1 (label)" in problem:
        hint = " If line 1 is a header, set data.layout=kaggle (or auto)."
    return DataError(f"mnist_csv: {file} line {line} {problem} ({fmt.describe}). Fix or remove that row.{hint}")


# A row that matches passes; one that does not is looked at cell by cell (which still takes " 7" or "+7").
_VALUE = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_GOOD_ROW = {
    True: re.compile(rf"[0-9](?:,{_VALUE}){{{PIXELS}}}"),
    False: re.compile(rf"{_VALUE}(?:,{_VALUE}){{{PIXELS - 1}}}"),
}


def _bad_rows(file: Path, fmt: _Format, limit: int) -> Iterator[tuple[int, str]]:
    """(line number, what is wrong) for the first `limit` bad rows, read slowly, line by line."""
    good = _GOOD_ROW[fmt.labeled]
    found = 0
    with open(file, encoding="utf-8-sig", errors="replace", newline="") as f:  # \n, \r\n or a lone \r
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if (number == 1 and fmt.header) or not line or good.fullmatch(line):
                continue  # blank lines are skipped by the parsers too
            problem = _row_problem(line.split(","), fmt)
            if problem:
                yield number, problem
                found += 1
                if found >= limit:
                    return


def _row_problem(cells: list[str], fmt: _Format) -> str | None:
    """What is wrong with one row, or None."""
    if len(cells) != fmt.fields:
        found = len(cells) - fmt.labeled
        return f"has {found} pixel values{' after the label' if fmt.labeled else ''}, expected {PIXELS}"
    for column, cell in enumerate(cells, start=1):
        is_label = fmt.labeled and column == 1
        name = "label" if is_label else f"pixel{column - 1 - fmt.labeled}"
        top, what = (9, "a class label 0..9") if is_label else (255, "a pixel value 0..255")
        if not cell.strip():
            return f"column {column} ({name}) is empty, expected {what}"
        value = _as_int(cell)
        if value is None or not 0 <= value <= top:
            return f"column {column} ({name}) is {cell.strip()!r}, expected {what}{_why_not(cell, is_label, cells)}"
    return None


def _why_not(cell: str, is_label: bool, cells: list[str]) -> str:
    """What a number that is not a whole 0..255 (or 0..9) most likely is."""
    try:
        value = float(cell)
    except ValueError:
        return ""
    if not value.is_integer():
        pixels = [float(c) for c in cells[1:] if _is_float(c)]
        if not is_label and pixels and all(0.0 <= v <= 1.0 for v in pixels):
            return (": the pixel values look scaled to 0..1; trainkit reads the stored whole numbers 0..255 and "
                    "scales them itself, so write round(value * 255)")
        return ": it is not a whole number"
    if "." in cell or "e" in cell.lower():
        return f": write it as a whole number ({int(value)}), not {cell.strip()}"
    return ""


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_INTEGER = re.compile(r"[+-]?[0-9]+")  # what the fast parser takes; int() would also take "1_0"


def _as_int(text: str) -> int | None:
    """The whole number `text` spells, or None."""
    text = text.strip()
    return int(text) if _INTEGER.fullmatch(text) else None


class PixelRowInputs(ImageInputs):
    """New inputs for an MNIST model (`trainkit predict`): a CSV of pixel rows, one image per line (Kaggle's test.csv,
    no label column; with one, the predictions are scored against it) → a Kaggle submission `ImageId,Label`, ids from
    1 in input order; or image files as for any image data."""

    def expected(self) -> str:
        return f"a CSV of pixel rows ({math.prod(IN_SHAPE)} values per line, e.g. Kaggle's test.csv), {super().expected()}"

    def read(self, path: Path) -> Inputs:
        if path.is_file() and path.suffix.lower() not in SUFFIXES and _first_line_fields(path) >= math.prod(IN_SHAPE):
            split = read_split(str(path), layout="auto", key="input", cache=False)  # one pass: no cache files
            x = split.x
            chunks = ((x[s:s + DECODE_CHUNK], [[str(i + 1)] for i in range(s, min(s + DECODE_CHUNK, len(x)))])
                      for s in range(0, len(x), DECODE_CHUNK))
            return Inputs("pixel_rows", len(x), ["ImageId"], chunks, split.y, output="submission.csv",
                          submission="Label")
        return super().read(path)

    def index_csv(self, path: Path) -> tuple[list[Path], list[str]]:
        try:
            return super().index_csv(path)
        except DataError as err:
            pixels = math.prod(IN_SHAPE)
            raise DataError(f"{err} (a pixel CSV has {pixels} or {pixels + 1} fields per line)") from None


def _first_line_fields(path: Path) -> int:
    with open(path, "rb") as f:
        return f.readline(1 << 16).count(b",") + 1
