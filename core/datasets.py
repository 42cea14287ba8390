"""Real data sets that ship on this machine's package managers (nothing is downloaded at run time)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from edgeslim.errors import EdgeslimError

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                       "t10k-labels-idx1-ubyte.gz")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist_dir() -> Path:
    candidates = [os.environ["EDGESLIM_FASHION_MNIST"]] if "EDGESLIM_FASHION_MNIST" in os.environ else []
    candidates += list(FASHION_MNIST_DIRS)
    for folder in candidates:
        if all((Path(folder) / f).is_file() for f in FASHION_MNIST_FILES):
            return Path(folder)
    raise EdgeslimError(
        f"Fashion-MNIST not found in {', '.join(candidates)}: apt-get install dataset-fashion-mnist "
        "(Debian), or set EDGESLIM_FASHION_MNIST=DIR holding the four idx .gz files"
    )


def load_fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); images float32 in [0, 1], shape (N, 1, 28, 28); labels int64."""
    folder = fashion_mnist_dir()
    x_train, y_train, x_test, y_test = (_read_idx(folder / f) for f in FASHION_MNIST_FILES)
    scale = np.float32(1.0 / 255.0)
    return ((x_train.astype(np.float32) * scale)[:, None], y_train.astype(np.int64),
            (x_test.astype(np.float32) * scale)[:, None], y_test.astype(np.int64))
