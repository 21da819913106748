"""Inputs for a model edgekit did not train: folders of .npy arrays, and noise.

    arrayfolder   data.root/CLASS/*.npy (labeled) or data.root/*.npy (unlabeled): one input
                  per file, of the model's input shape; split by data.test_fraction
    noise         no data at all (`edgekit import` without --data): random inputs of
                  data.shape (or random images of data.image_size), enough to check fp32
                  artifacts against the model; export refuses int8 on them, since ranges
                  calibrated on noise are how int8 silently breaks

Neither imports torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.data.splits import ArraySplit, DataSplits, DataUnavailable, register_dataset
from edgekit.errors import EdgekitError
from edgekit.runtime.preprocess.array import array_spec, read, to_batch

NOISE_SAMPLES = 64  # inputs of each split of `noise`


def array_files(folder: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """(.npy files, labels, class names) of a folder of class folders, or of a flat folder
    (then every label is 0 and the class names are [])."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if classes:
        files, y = [], []
        for index, name in enumerate(classes):
            found = sorted((folder / name).glob("*.npy"))
            files += found
            y += [index] * len(found)
        return files, np.array(y, dtype=np.int64), classes
    files = sorted(folder.glob("*.npy")) if folder.is_dir() else []
    return files, np.zeros(len(files), dtype=np.int64), []


@register_dataset("arrayfolder")
def arrayfolder(cfg):
    root = Path(cfg.root)
    files, y, classes = array_files(root)
    if len(files) < 2:
        raise DataUnavailable(f"{str(root)!r} holds {len(files)} .npy file(s); expected at "
                              "least 2 (a folder of .npy inputs, or of class folders of them)")
    x = np.stack([_one(f) for f in files])
    shape = x.shape[1:]
    order = np.random.default_rng(cfg.split_seed).permutation(len(files))
    n_test = min(len(files) - 1, max(1, round(len(files) * cfg.test_fraction)))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return DataSplits(ArraySplit(x[train], y[train]), ArraySplit(x[test], y[test]),
                      labels=classes or ["input"], preprocess=array_spec(shape))


def _one(path: Path) -> np.ndarray:
    a = read(path)
    return to_batch(a, {"shape": list(a.shape)}, str(path))[0]


@register_dataset("noise")
def noise(cfg):
    rng = np.random.default_rng(cfg.split_seed)
    if cfg.shape:
        shape = tuple(int(d) for d in cfg.shape.split("x"))
        x = rng.standard_normal((2 * NOISE_SAMPLES, *shape)).astype(np.float32)
        y = np.zeros(len(x), dtype=np.int64)
        return DataSplits(ArraySplit(x[:NOISE_SAMPLES], y[:NOISE_SAMPLES]),
                          ArraySplit(x[NOISE_SAMPLES:], y[NOISE_SAMPLES:]), labels=["input"],
                          preprocess=array_spec(shape))
    if not cfg.image_size:
        raise EdgekitError("no data: give the input's shape (--input-shape) or --image-size")
    from PIL import Image

    from edgekit.data.images import image_splits

    size = cfg.image_size
    images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
              for _ in range(2 * NOISE_SAMPLES)]
    y = np.zeros(len(images), dtype=np.int64)
    return image_splits((images[:NOISE_SAMPLES], y[:NOISE_SAMPLES]),
                        (images[NOISE_SAMPLES:], y[NOISE_SAMPLES:]), ["image"], cfg,
                        native_mode="RGB")
