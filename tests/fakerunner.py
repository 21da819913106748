"""A runner stand-in for the decode pool and batcher tests: no model, no manifest."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError


class FakeRunner:
    """Prepares file i as an array of value i (a name ending in 'bad' fails); infer labels
    each row with its value. Counts prepares and the batches the model saw."""

    stateful = False

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.prepared = 0
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def prepare(self, f):
        with self.lock:
            self.prepared += 1
        time.sleep(self.delay * (hash(str(f)) % 3))  # out-of-order completion
        if str(f).endswith("bad"):
            raise EdgekitError(f"{f} is bad")
        return np.full((1, 2, 2), float(Path(f).name.split("-")[0]), np.float32)

    def infer(self, x, k=5):
        self.batches.append(len(x))
        return [{"label": str(int(row[0, 0, 0])), "top": [{"label": "a"}] * 5} for row in x]
