"""Tiny data files in the exact on-disk formats of the real datasets, for tests (no download, no ../shared).

"learnable" files carry a class-dependent pattern, so a small model beats chance within one epoch.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

MNIST_HEADER = "label," + ",".join(f"pixel{i}" for i in range(784))
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_DECIMAL = [str(v) for v in range(256)]  # uint8 → text by lookup: much faster than formatting


def mnist_images(n: int, seed: int = 0, learnable: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 n×28×28, y int64 n), every class present when n >= 10: a 9×5 block on dark noise whose
    position (and, for models that pool globally, brightness) depends on the class."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 10).astype(np.int64)
    if not learnable:
        return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), y
    x = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(y):
        top, left = 3 + 13 * (label // 5), 1 + 5 * (label % 5)  # two rows of five block positions
        level = 90 + 17 * label
        x[i, top:top + 9, left:left + 5] = rng.integers(level - 10, level + 10, (9, 5), dtype=np.uint8)
    return x, y


def write_mnist_csv(
    path: str | Path, n: int = 64, layout: str = "kaggle", seed: int = 0, learnable: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Write `n` images as "kaggle" (header, label first), "kaggle_test" (header, no label) or
    "headerless" (label first). Returns (x uint8 n×28×28, y int64 n), y also for kaggle_test."""
    x, y = mnist_images(n, seed, learnable)
    rows = x.reshape(n, 784)
    if layout == "kaggle_test":
        lines = [MNIST_HEADER.removeprefix("label,")]
    elif layout in ("kaggle", "headerless"):
        rows = np.column_stack([y.astype(np.uint8), rows])
        lines = [MNIST_HEADER] if layout == "kaggle" else []
    else:
        raise ValueError(f"layout must be kaggle, kaggle_test or headerless, not {layout!r}")
    lines += [",".join([_DECIMAL[v] for v in row]) for row in rows.tolist()]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return x, y


def cifar_images(n: int, seed: int = 0, learnable: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(data uint8 n×3072 in R,G,B planes, labels int64 n): a class colour and an 8×8 block per class."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 10).astype(np.int64)
    if not learnable:
        return rng.integers(0, 256, (n, 3072), dtype=np.uint8), y
    palette = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40], [200, 40, 200],
                        [40, 200, 200], [120, 120, 120], [230, 140, 30], [30, 90, 160], [160, 90, 30]])
    x = palette[y][:, :, None, None] + rng.integers(-30, 31, (n, 3, 32, 32))
    for i, label in enumerate(y):
        top, left = 4 + 16 * (label // 5), 6 * (label % 5)
        x[i, :, top:top + 8, left:left + 8] = 255
    return np.clip(x, 0, 255).astype(np.uint8).reshape(n, 3072), y


def write_cifar10(
    root: str | Path,
    n_per_batch: int = 50,
    batches: tuple[str, ...] = ("data_batch_1",),
    with_test: bool = True,
    with_meta: bool = True,
    seed: int = 0,
    learnable: bool = True,
) -> Path:
    """Write root/cifar-10-batches-py/ byte for byte in the official archive's layout; return that folder."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = list(batches) + (["test_batch"] if with_test else [])
    for k, name in enumerate(names):
        data, labels = cifar_images(n_per_batch, seed * 1000 + k, learnable)
        if name == "test_batch":
            title = "testing batch 1 of 1"
        else:
            title = f"training batch {name.removeprefix('data_batch_')} of 5"
        write_cifar_batch(folder / name, data, labels, title)
    if with_meta:
        meta = {b"num_cases_per_batch": n_per_batch, b"label_names": [s.encode() for s in CIFAR_NAMES],
                b"num_vis": 3072}
        (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return folder


def write_cifar_batch(file: Path, data: np.ndarray, labels, title: str = "training batch 1 of 5") -> None:
    """One batch file as the official archive has it: the dict keys and order, filenames included."""
    filenames = [f"{CIFAR_NAMES[int(c) % 10]}_s_{i:06d}.png".encode() for i, c in enumerate(labels)]
    batch = {b"batch_label": title.encode(), b"labels": [int(c) for c in labels], b"data": data,
             b"filenames": filenames}
    Path(file).write_bytes(py2_pickle(batch))


def py2_pickle(obj) -> bytes:
    """Protocol 2 as Python 2's cPickle wrote the official batches: byte strings as STRING opcodes
    (not Python 3's _codecs.encode), numpy under numpy.core.multiarray, no memo, one MARK per list.
    Checked once by hand: re-pickling a real data_batch_1 and batches.meta gives the same bytes."""
    out = bytearray(b"\x80\x02")
    _py2_save(obj, out)
    return bytes(out + b".")


def _py2_save(obj, out: bytearray) -> None:
    if isinstance(obj, bool):
        out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, int):
        out += (b"K" + struct.pack("<B", obj) if 0 <= obj < 256 else
                b"M" + struct.pack("<H", obj) if 0 <= obj < 65536 else b"J" + struct.pack("<i", obj))
    elif obj is None:
        out += b"N"
    elif isinstance(obj, bytes):
        out += b"U" + struct.pack("<B", len(obj)) if len(obj) < 256 else b"T" + struct.pack("<i", len(obj))
        out += obj
    elif isinstance(obj, (list, dict)):
        out += b"]" if isinstance(obj, list) else b"}"
        if obj:
            out += b"("
            for item in obj.items() if isinstance(obj, dict) else obj:
                for part in item if isinstance(obj, dict) else (item,):
                    _py2_save(part, out)
            out += b"e" if isinstance(obj, list) else b"u"
    elif isinstance(obj, np.ndarray) and obj.dtype == np.uint8:
        _py2_save_uint8_array(obj, out)
    else:
        raise TypeError(f"py2_pickle does not write {type(obj).__name__}")


def _py2_save_uint8_array(array: np.ndarray, out: bytearray) -> None:
    # _reconstruct(ndarray, (0,), 'b'), then BUILD with (1, shape, dtype('u1'), False, raw bytes)
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    _py2_save(0, out)
    out += b"\x85"
    _py2_save(b"b", out)
    out += b"\x87R("
    _py2_save(1, out)
    out += b"("
    for side in array.shape:
        _py2_save(side, out)
    out += b"tcnumpy\ndtype\n"
    _py2_save(b"u1", out)
    _py2_save(0, out)
    _py2_save(1, out)
    out += b"\x87R("
    _py2_save(3, out)
    _py2_save(b"|", out)
    out += b"NNN" + b"J" + struct.pack("<i", -1) + b"J" + struct.pack("<i", -1)
    _py2_save(0, out)
    out += b"tb\x89"
    _py2_save(np.ascontiguousarray(array).tobytes(), out)
    out += b"tb"


def write_pngs(folder: str | Path, images: np.ndarray, names: list[str]) -> list[Path]:
    """Each uint8 H×W (grayscale) or H×W×C image as a PNG named by `names`, as a tutorial's folder holds them."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in names]
    for image, path in zip(images, paths):
        Image.fromarray(image).save(path)
    return paths


def write_mnist_index(
    csv_path: str | Path, images_dir: str | Path, n: int = 24, column: str = "filename", labeled: bool = True,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The "identify the digits" layout: PNG files in `images_dir` and an index CSV `filename,label` (or
    `id,label`: file <id>.png). Returns (x uint8 n×28×28, y int64 n) in the CSV's row order."""
    x, y = mnist_images(n, seed)
    ids = [str(1000 + 7 * i) for i in range(n)]  # not 0..n-1: the reader must follow the names, not the order
    write_pngs(images_dir, x, [f"{i}.png" for i in ids])
    names = ids if column == "id" else [f"{i}.png" for i in ids]
    header = [column] + (["label"] if labeled else [])
    rows = [[name] + ([str(label)] if labeled else []) for name, label in zip(names, y)]
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    Path(csv_path).write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return x, y


def write_mnist_idx(folder: str | Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> dict[str, np.ndarray]:
    """The four original MNIST IDX files (big-endian header, then uint8 data), gzipped as distributed or not."""
    import gzip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = mnist_images(n_train, seed=0), mnist_images(n_test, seed=1)
    arrays = {"train-images-idx3-ubyte": x_train, "train-labels-idx1-ubyte": y_train.astype(np.uint8),
              "t10k-images-idx3-ubyte": x_test, "t10k-labels-idx1-ubyte": y_test.astype(np.uint8)}
    for name, array in arrays.items():
        raw = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape) + array.tobytes()
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


def folder_images(n: int, size: tuple[int, int] = (12, 10), colour: bool = False, seed: int = 0,
                  classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 n×H×W, or n×H×W×3 with `colour`; y int64 n, every class present when n >= classes): a bright
    block whose row depends on the class, on dark noise, so a small model learns it in an epoch."""
    rng = np.random.default_rng(seed)
    height, width = size
    y = rng.permutation(np.arange(n) % classes).astype(np.int64)
    x = rng.integers(0, 50, (n, height, width, 3) if colour else (n, height, width), dtype=np.uint8)
    band = max(1, height // classes)
    for i, label in enumerate(y):
        x[i, label * band:(label + 1) * band] = 200 + 15 * (label % 4)
        if colour:
            x[i, label * band:(label + 1) * band, :, label % 3] = 40  # a class colour, not gray
    return x, y


def write_image_folder(
    root: str | Path, classes: tuple[str, ...] = ("cat", "dog", "frog"), per_class: dict[str, int] | None = None,
    size: tuple[int, int] = (12, 10), colour: bool = False, suffix: str = ".png", seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """torchvision's ImageFolder layout: root/<split>/<class>/<nnn><suffix> for each split in `per_class`
    (default train 12 and test 6 images; a split "" writes the class folders straight into root). Returns
    {split: (x, y)} in ImageFolder's order: classes sorted by name, then files by name."""
    per_class = {"train": 12, "test": 6} if per_class is None else per_class
    written = {}
    for k, (split, n) in enumerate(per_class.items()):
        x, y = folder_images(n, size, colour, seed * 100 + k, len(classes))
        folder = Path(root) / split if split else Path(root)
        order = []
        for label, name in sorted(enumerate(classes), key=lambda item: item[1]):
            index = np.flatnonzero(y == label)
            write_pngs(folder / name, x[index], [f"{i:03d}{suffix}" for i in index])
            order += index.tolist()
        written[split] = (x[order], np.array([sorted(classes).index(classes[c]) for c in y[order]], np.int64))
    return written


def write_idx(file: str | Path, array: np.ndarray) -> None:
    """One IDX file (the MNIST family's raw format): magic 0,0,type,ndim, big-endian sizes, big-endian data.
    uint8 (type 8) as MNIST's files, int32 (type 12) as QMNIST's labels-idx2-int."""
    types = {np.dtype(np.uint8): 8, np.dtype(np.int32): 12}
    header = bytes([0, 0, types[array.dtype], array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    Path(file).parent.mkdir(parents=True, exist_ok=True)
    Path(file).write_bytes(header + array.astype(array.dtype.newbyteorder(">")).tobytes())


def write_cifar100(root: str | Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> Path:
    """root/cifar-100-python/{train,test,meta} as the official archive has them: py2 pickles with fine and coarse
    labels (fine label = the CIFAR-10-style class index here, coarse = half of it)."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for k, (name, n) in enumerate((("train", n_train), ("test", n_test))):
        data, labels = cifar_images(n, seed * 10 + k)
        batch = {b"filenames": [f"img_{i}.png".encode() for i in range(n)], b"batch_label": f"{name}ing".encode(),
                 b"fine_labels": [int(c) for c in labels], b"coarse_labels": [int(c) // 2 for c in labels],
                 b"data": data}
        (folder / name).write_bytes(py2_pickle(batch))
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(py2_pickle(meta))
    return folder


def write_svhn(root: str | Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> dict[str, tuple]:
    """root/train_32x32.mat and test_32x32.mat as SVHN distributes them (MATLAB files: X uint8 32×32×3×N, y uint8
    N×1 with digit 0 stored as 10). Returns {split: (x uint8 N×3×32×32, digits int64 N)}."""
    from scipy.io import savemat

    written = {}
    for k, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        data, digits = cifar_images(n, seed * 10 + k)
        x = data.reshape(n, 3, 32, 32)
        stored = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        savemat(Path(root) / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": stored})
        written[split] = (x, digits)
    return written


def assert_any_subset_of_splits_equals_the_full_load(load) -> None:
    """`load(splits=...)` for every non-empty subset of train/val/test gives exactly those splits of `load()`, the
    others None, and the same metadata."""
    from itertools import combinations

    import torch

    from trainkit.data.base import SPLITS

    full = load()
    for asked in [subset for k in (1, 2, 3) for subset in combinations(SPLITS, k)]:
        part = load(splits=asked)
        for name in SPLITS:
            got, whole = getattr(part, name), getattr(full, name)
            if name in asked:
                assert torch.equal(got.x, whole.x) and torch.equal(got.y, whole.y), (asked, name)
            else:
                assert got is None, (asked, name)
        assert part.meta == full.meta, asked
