"""The dataset contract: the registry, and the splits every builder returns.

A builder `(DataConfig) -> DataSplits` registers with `@register_dataset("name")`; its
splits hold model-ready numpy arrays and the preprocess spec that made them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.registry import Registry

DATASETS: Registry = Registry("dataset")
register_dataset = DATASETS.register


class DataUnavailable(EdgekitError):
    """The dataset is not on disk and can't be downloaded (a recipe's fallback may step in)."""


@dataclass
class ArraySplit:
    """One split held in memory; a map-style dataset for torch's DataLoader."""

    x: np.ndarray  # (N, ...) model inputs, already preprocessed: (N, C, H, W) images, ...
    y: np.ndarray  # (N, ...) targets: int64 class indices, or float32 values (regression)
    images: list = field(default_factory=list)  # raw PIL images, where the data are images
    # > 0: the rows are consecutive windows of `stream` parallel series, rows k*stream ...
    # (k+1)*stream - 1 holding window k of each; read in that order, in batches of `stream`,
    # a stateful model carries its hidden state from one window into the next.
    stream: int = 0

    def __post_init__(self):
        assert len(self.x) == len(self.y), (self.x.shape, self.y.shape)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        """Sample i, or the batch (x[i], y[i]) for a list of indices."""
        return self.x[i], self.y[i]

    def image(self, i: int):
        """Sample i as the PIL image it was made from, or None where the data aren't images."""
        return self.images[i] if self.images else None


@dataclass
class DataSplits:
    train: ArraySplit  # or any split with x, y, __len__, __getitem__, image (data.images)
    test: ArraySplit
    labels: list[str]  # class index -> name
    preprocess: dict  # the runtime spec, see edgekit.runtime.preprocess
    task: str = "classification"  # a name in edgekit.tasks
    name: str = ""  # the dataset that was built (the fallback's, when the recipe's wasn't there)
    note: str = ""  # why the fallback was built instead of the recipe's dataset

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input without the batch dimension, e.g. (1, 32, 32)."""
        return tuple(self.train.x.shape[1:])

    def fingerprint(self) -> str:
        """A hash of the splits and the preprocessing: export checks it matches training's."""
        if "_fingerprint" not in self.__dict__:  # computed once: it reads every test input
            self.__dict__["_fingerprint"] = self._hash()
        return self.__dict__["_fingerprint"]

    def _hash(self) -> str:
        h = hashlib.sha256(json.dumps([self.labels, self.preprocess], sort_keys=True).encode())
        h.update(np.ascontiguousarray(self.train.y).tobytes())
        h.update(np.ascontiguousarray(self.test.y).tobytes())
        x = self.test.x
        for i in range(0, len(x), 1024):  # in chunks: the same bytes, bounded memory
            h.update(np.ascontiguousarray(x[i:i + 1024]).tobytes())
        return h.hexdigest()[:16]
