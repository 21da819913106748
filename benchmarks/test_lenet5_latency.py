"""Latency of the lenet5 demo model through each path, measured in one process (make bench).

pytest-benchmark times each path back to back in one run; compare the ratios between rows,
not absolute times, across machines (absolute times drift on shared hosts).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.bench import machine_info
from edgekit.export import export
from edgekit.recipe import load_recipe
from edgekit.runtime import load
from edgekit.train import load_run, train

ARTIFACTS = ["model.onnx", "model.int8.onnx", "model.ts"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = train(load_recipe("lenet5", ["train.epochs=3"]), tmp_path_factory.mktemp("b") / "run",
                progress=False)
    export(run, ["onnx", "onnx-int8", "torchscript"], max_int8_drop=100)
    return run


@pytest.fixture(scope="module")
def x(run):
    with np.load(run / "export" / "samples.npz") as z:
        return z["x"][:1]


def test_torch_eager(benchmark, run, x):
    import torch

    _, model, _ = load_run(run)
    t = torch.from_numpy(x)
    with torch.inference_mode():
        benchmark(model, t)
    benchmark.extra_info["machine"] = machine_info()


@pytest.mark.parametrize("name", ARTIFACTS)
def test_artifact(benchmark, run, x, name):
    runner = load(run / "export" / name, threads=2)
    benchmark(runner.run, x)
    benchmark.extra_info["machine"] = machine_info()
