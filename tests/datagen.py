"""Small datasets written in the real on-disk formats, for tests that must not touch the network.

Each class is a bright square at its own place on a noisy background, so a model learns it in
an epoch or two. The files are exactly what the real datasets ship:
    MNIST / Fashion-MNIST   IDX files under ROOT/MNIST/raw (ROOT/FashionMNIST/raw)
    CIFAR-10                python pickle batches under ROOT/cifar-10-batches-py, with the
                            md5 of each (CIFAR-10's loader checks them: pass them through
                            edgekit.data.vision.CIFAR10_CHECKSUMS)
    ImageFolder             PNG files in class folders
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np

MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def pattern_images(n: int, classes: int, size: tuple[int, int], channels: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, H, W[, C]) uint8 images and (n,) labels; class k is a bright square at spot k."""
    rng = np.random.default_rng(seed)
    h, w = size
    y = np.arange(n) % classes  # every class present, balanced
    rng.shuffle(y)
    x = rng.integers(0, 60, (n, h, w, channels)).astype(np.uint8)
    side = max(2, min(h, w) // 4)
    cols = max(1, (w - side) // side)
    for i, k in enumerate(y):
        r, c = divmod(int(k), cols)
        top, left = (r * side) % (h - side), (c * side) % (w - side)
        x[i, top:top + side, left:left + side] = 230
    return (x[..., 0] if channels == 1 else x), y.astype(np.int64)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file: magic (0, 0, type 0x08 = ubyte, ndim), big-endian int32 dims, the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def mnist(root: Path, folder: str = "MNIST", n_train: int = 240, n_test: int = 60,
          seed: int = 0) -> Path:
    """MNIST-format IDX files (28x28 grayscale, 10 classes) as torchvision reads them."""
    raw = Path(root) / folder / "raw"
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = pattern_images(n, 10, (28, 28), 1, seed + (split == "test"))
        images, labels = MNIST_FILES[split]
        write_idx(raw / images, x)
        write_idx(raw / labels, y.astype(np.uint8))
    return Path(root)


def cifar10(root: Path, n_train: int = 250, n_test: int = 60, seed: int = 0) -> dict[str, str]:
    """CIFAR-10 python batches (5 training batches, a test batch, batches.meta).

    Returns:
        file name -> md5 of each file written.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    x, y = pattern_images(n_train + n_test, 10, (32, 32), 3, seed)
    rows = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)  # CIFAR stores (N, 3*32*32) planes
    batches = {f"data_batch_{i + 1}": idx for i, idx in
               enumerate(np.array_split(np.arange(n_train), 5))}
    batches["test_batch"] = np.arange(n_train, n_train + n_test)
    for name, idx in batches.items():
        entry = {"batch_label": name, "labels": [int(v) for v in y[idx]], "data": rows[idx],
                 "filenames": [f"{i}.png" for i in idx]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}, protocol=2))
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def imagefolder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 15,
                size: tuple[int, int] = (40, 48), split: bool = False, seed: int = 0) -> Path:
    """PNG files in class folders (RGB, `size` (H, W)); with split=True, train/ and val/."""
    from PIL import Image

    root = Path(root)
    parts = {"train": per_class, "val": max(2, per_class // 3)} if split else {"": per_class}
    for k, (part, n) in enumerate(parts.items()):
        x, y = pattern_images(n * len(classes), len(classes), size, 3, seed + k)
        for i, (img, label) in enumerate(zip(x, y, strict=True)):
            folder = root / part / classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, "RGB").save(folder / f"{i:04d}.png")
    return root
