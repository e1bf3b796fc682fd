"""Write real MNIST (IDX files, as in ../shared/data/mnist or torchvision's download) as Kaggle-layout CSVs.

    python benchmarks/mnist_to_csv.py ../shared/data/mnist /tmp/mnist_csv
writes train.csv (60,000 rows) and test.csv (10,000 rows, labeled), header label,pixel0..pixel783.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_kaggle_csv(images: np.ndarray, labels: np.ndarray, path: Path) -> None:
    table = np.concatenate([labels[:, None].astype(np.int64), images.reshape(len(images), -1)], axis=1)
    header = "label," + ",".join(f"pixel{i}" for i in range(784))
    np.savetxt(path, table, fmt="%d", delimiter=",", header=header, comments="")


def main(source: str, out: str) -> None:
    src, dst = Path(source), Path(out)
    dst.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(next(src.glob(f"{prefix}-images-idx3-ubyte*")))
        labels = read_idx(next(src.glob(f"{prefix}-labels-idx1-ubyte*")))
        write_kaggle_csv(images, labels, dst / f"{split}.csv")
        print(f"{dst / f'{split}.csv'}: {len(labels)} rows")


if __name__ == "__main__":
    main(*sys.argv[1:3])
