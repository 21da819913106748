"""Image datasets made model-ready by the runtime's own preprocessing.

Every image dataset (digits, MNIST, Fashion-MNIST, CIFAR-10, ImageFolder) hands its PIL images
to `image_splits`, which fixes the preprocessing spec (mode, size, resize + center crop,
normalization) and prepares every image with `edgekit.runtime.preprocess.image_to_array`, the
same function the Pi runs: a PNG of a held-out sample is prepared exactly as training saw it.

A split that fits in MEMORY_LIMIT bytes once prepared is prepared once and kept in memory;
a bigger one (CIFAR-10 at 224 px, a large ImageFolder) prepares each image when it is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edgekit.data.splits import DataSplits
from edgekit.errors import EdgekitError
from edgekit.runtime.preprocess.image import image_spec, image_to_array

MEMORY_LIMIT = 1 << 30  # bytes of float32 per split kept in memory
STATS_SAMPLES = 2000  # training images that set the normalization's mean/std
# torchvision's ImageNet statistics: what pretrained backbones were trained with.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Images:
    """A sequence of PIL images read on demand: `Images(n, load)` with load(i) -> image."""

    def __init__(self, n: int, load: Callable[[int], object]):
        self.n, self.load = n, load

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.load(int(i))


class PreparedImages:
    """Images as one float32 array (N, C, H, W) that prepares rows on demand.

    Indexing takes an int, a slice or an index array, like a numpy array, and returns numpy.
    """

    def __init__(self, images: Sequence, spec: dict, shape: tuple[int, ...]):
        self.images, self.spec = images, spec
        self.shape, self.dtype, self.ndim = (len(images), *shape), np.dtype(np.float32), 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return image_to_array(self.images[int(index)], self.spec)
        rows = np.arange(len(self))[index]
        out = np.empty((len(rows), *self.shape[1:]), np.float32)
        for k, i in enumerate(rows):
            out[k] = image_to_array(self.images[int(i)], self.spec)
        return out

    def __array__(self, dtype=None, copy=None):
        return self[:] if dtype is None else self[:].astype(dtype)


class ImageSplit:
    """One split of images and labels; a map-style dataset for torch's DataLoader."""

    stream = 0  # independent samples, not windows of a series (see ArraySplit.stream)

    def __init__(self, images: Sequence, y: np.ndarray, spec: dict):
        c = 1 if spec["mode"] == "L" else 3
        shape = (c, *spec["size"])
        self.images, self.y = images, np.asarray(y, dtype=np.int64)
        self.x = PreparedImages(images, spec, shape)
        if len(images) * int(np.prod(shape)) * 4 <= MEMORY_LIMIT:
            self.x = self.x[:]  # prepared once: epochs after the first cost no decoding

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        """Sample i, or the batch (x[i], y[i]) for a list of indices."""
        if isinstance(i, list):
            i = np.asarray(i)
        return self.x[i], self.y[i]

    def image(self, i: int):
        """Sample i as the PIL image it was made from."""
        return self.images[i]


def subset(images: Sequence, y: np.ndarray, idx: np.ndarray) -> tuple[Images, np.ndarray]:
    """The images and labels at positions `idx`, images still read on demand."""
    idx = np.asarray(idx)
    return Images(len(idx), lambda i: images[int(idx[i])]), np.asarray(y)[idx]


def normalization(text: str, channels: int) -> tuple[list, list] | None:
    """The (mean, std) a recipe's data.normalize names, or None for "dataset" (measured).

    Raises:
        EdgekitError: values whose count is not 1 or `channels`, or a std that is not > 0.
    """
    if text == "dataset":
        return None
    if text == "imagenet":
        if channels == 3:
            return list(IMAGENET_MEAN), list(IMAGENET_STD)
        return [round(float(np.mean(IMAGENET_MEAN)), 4)], [round(float(np.mean(IMAGENET_STD)), 4)]
    if text == "none":
        return [0.0] * channels, [1.0] * channels
    mean, std = ([float(v) for v in part.split(",")] for part in text.split("/"))
    for values in (mean, std):
        if len(values) not in (1, channels):
            raise EdgekitError(f"data.normalize {text!r}: expected 1 or {channels} values for "
                               f"{channels}-channel images on each side of '/'")
    if not all(s > 0 for s in std):
        raise EdgekitError(f"data.normalize {text!r}: expected std values > 0")
    return (mean * channels)[:channels] if len(mean) == 1 else mean, \
        (std * channels)[:channels] if len(std) == 1 else std


def image_splits(train: tuple[Sequence, np.ndarray], test: tuple[Sequence, np.ndarray],
                 labels: list[str], cfg, native_mode: str) -> DataSplits:
    """Model-ready splits from PIL images and integer labels, with the preprocessing spec.

    Args:
        train, test: (images, labels) where images[i] is a PIL image.
        cfg: the recipe's DataConfig (image_size, resize, channels, normalize,
            max_train_samples, split_seed).
        native_mode: "L" or "RGB", used when cfg.channels is 0.
    """
    images, y = train
    if cfg.max_train_samples and cfg.max_train_samples < len(y):  # a fixed random subset
        keep = np.sort(np.random.default_rng(cfg.split_seed).permutation(len(y))
                       [:cfg.max_train_samples])
        images, y = subset(images, y, keep)
    mode = {0: native_mode, 1: "L", 3: "RGB"}[cfg.channels]
    size = (cfg.image_size, cfg.image_size)
    channels = 1 if mode == "L" else 3
    given = normalization(cfg.normalize, channels)
    if given is not None:
        mean, std = given
    else:  # mean/std of (a fixed sample of) the training images after resizing and scaling
        plain = image_spec(mode, size, mean=[0.0] * channels, std=[1.0] * channels,
                           resize=cfg.resize)
        pick = np.arange(len(y))
        if len(pick) > STATS_SAMPLES:
            pick = np.sort(np.random.default_rng(cfg.split_seed).permutation(len(y))
                           [:STATS_SAMPLES])
        seen = np.stack([image_to_array(images[int(i)], plain) for i in pick])  # (N, C, H, W)
        axes = (0, 2, 3) if channels > 1 else None  # per channel; one value for grayscale
        mean = [round(float(v), 4) for v in np.atleast_1d(seen.mean(axis=axes))]
        std = [round(float(v), 4) for v in np.atleast_1d(seen.std(axis=axes))]
    spec = image_spec(mode, size, mean=list(mean), std=list(std), resize=cfg.resize)
    return DataSplits(train=ImageSplit(images, y, spec), test=ImageSplit(*test, spec),
                      labels=list(labels), preprocess=spec)
