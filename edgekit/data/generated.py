"""Generated datasets from the handbooks: a noisy line, a 3-class spiral, sin -> cos.

Each is made from a fixed seed (data.split_seed), so training and export build the same splits.
`data.samples` sets the size (0: the handbook's).
"""

from __future__ import annotations

import numpy as np

from edgekit.data.splits import ArraySplit, DataSplits, register_dataset
from edgekit.errors import EdgekitError
from edgekit.runtime.preprocess.array import array_spec


def _split(cfg, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of range(n) into (train, test) indices by data.test_fraction."""
    order = np.random.default_rng(cfg.split_seed).permutation(n)
    n_test = int(round(n * cfg.test_fraction))
    if not 0 < n_test < n:
        raise EdgekitError(f"data.test_fraction={cfg.test_fraction} leaves no train or no test "
                           f"samples out of {n}")
    return order[n_test:], order[:n_test]


@register_dataset("line")
def line(cfg) -> DataSplits:
    """y = 5x + 7 + noise, noise uniform in [0, 0.25), x uniform in [-1, 1): (N, 1) -> (N, 1).

    The best line is y = 5x + 7.125 (the noise's mean joins the intercept).
    """
    n = cfg.samples or 1000
    rng = np.random.default_rng(cfg.split_seed)
    x = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    y = (5 * x + 7 + rng.uniform(0, 0.25, (n, 1))).astype(np.float32)
    train, test = _split(cfg, n)
    return DataSplits(train=ArraySplit(x[train], y[train]), test=ArraySplit(x[test], y[test]),
                      labels=["y"], preprocess=array_spec((1,)), task="regression")


@register_dataset("spiral")
def spiral(cfg, classes: int = 3) -> DataSplits:
    """Three interleaved spiral arms in 2-D (CS231n): no line separates them. (N, 2) -> class.

    `data.samples` points per class (default 1000): radius 0 to 1, angle 4 radians per arm
    with Gaussian noise of 0.2 radians.
    """
    per_class = cfg.samples or 1000
    rng = np.random.default_rng(cfg.split_seed)
    xs, ys = [], []
    for k in range(classes):
        r = np.linspace(0.0, 1.0, per_class)
        t = np.linspace(k * 4, (k + 1) * 4, per_class) + rng.standard_normal(per_class) * 0.2
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], 1))
        ys.append(np.full(per_class, k))
    x = np.concatenate(xs).astype(np.float32)  # (classes * per_class, 2)
    y = np.concatenate(ys).astype(np.int64)
    train, test = _split(cfg, len(y))
    return DataSplits(train=ArraySplit(x[train], y[train]), test=ArraySplit(x[test], y[test]),
                      labels=[str(k) for k in range(classes)], preprocess=array_spec((2,)))


@register_dataset("sincos")
def sincos(cfg, dt: float = 0.1) -> DataSplits:
    """sin(t) -> cos(t) over one long series, cut into windows of `data.window` steps (10).

    The series has `data.samples` steps (default 20,000; t advances 0.1 per step); the last
    data.test_fraction of it is the test split. Training reads `data.batch_size` parallel
    streams (consecutive stretches of the series) window by window in order, so a stateful
    model carries its hidden state from one window into the next; the test split is one stream,
    as a sensor's readings arrive on the device: (N, T, 1) -> (N, T, 1). Its first steps are
    ambiguous (a sine value alone does not give the cosine's sign) until the state warms up.
    """
    window = cfg.window or 10
    steps = cfg.samples or 20_000
    t = np.arange(steps) * dt
    series_x, series_y = np.sin(t), np.cos(t)
    cut = int(round(steps * (1 - cfg.test_fraction)))

    def split(lo: int, hi: int, name: str, streams: int) -> ArraySplit:
        per_stream = (hi - lo) // (streams * window)  # windows per stream
        if per_stream < 1:
            raise EdgekitError(f"the {name} split of sincos ({hi - lo} steps) is shorter than "
                               f"{streams} stream(s) x data.window={window} steps; raise "
                               "data.samples, or lower data.batch_size (the training streams)")
        n = per_stream * window

        def windows(series: np.ndarray) -> np.ndarray:
            s = series[lo:lo + streams * n].reshape(streams, per_stream, window)  # (S, W, T)
            return s.transpose(1, 0, 2).reshape(-1, window, 1).astype(np.float32)  # (W*S, T, 1)

        return ArraySplit(windows(series_x), windows(series_y), stream=streams)

    return DataSplits(train=split(0, cut, "train", cfg.batch_size),
                      test=split(cut, steps, "test", 1), labels=["cos"],
                      preprocess=array_spec((window, 1)), task="sequence_regression")
