"""Dataset registry: `@register_dataset("name")` on a builder `(DataConfig) -> DataSplits`.

A dataset hands out model-ready numpy arrays prepared by `edgekit.runtime.preprocess`, plus the
preprocessing spec itself, so training and the runtime prepare inputs identically.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from edgekit.registry import Registry

DATASETS: Registry = Registry("dataset")
register_dataset = DATASETS.register


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

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.int64]:
        return self.x[i], self.y[i]

    def image(self, i: int):
        """Sample i as the PIL image it was made from, or None where the data aren't images."""
        return self.images[i] if self.images else None


@dataclass
class DataSplits:
    train: ArraySplit
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
        h = hashlib.sha256(json.dumps([self.labels, self.preprocess], sort_keys=True).encode())
        for a in (self.train.y, self.test.y, self.test.x):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


def build_dataset(cfg) -> DataSplits:
    """Build the dataset named by `cfg.name` (a DataConfig). Unknown names list the choices."""
    data = DATASETS.get(cfg.name)(cfg)
    data.name = data.name or cfg.name
    return data


def list_datasets() -> list[str]:
    return DATASETS.names()


# Builders register themselves on import.
from edgekit.data import digits, generated, text, uci  # noqa: E402, F401
