"""Latency of each model through each path, at 1 thread and all cores, batch 1 and 8.

One pytest-benchmark per (model, path, batch, threads). Test names use "all" for all cores, so
the same names come out on a 2-core x86 host and a 4-core Pi and `pytest-benchmark compare`
(or `edgekit bench compare`) lines them up. Compare ratios within one run: absolute times
drift on shared hosts.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import MODELS

from edgekit.machine import usable_cores

# Path -> artifact file in RUN/export (None: the trained model in PyTorch eager mode).
PATHS = {"torch-eager": None, "torchscript": "model.ts", "torchscript-int8": "model.int8.ts",
         "onnx": "model.onnx", "onnx-int8": "model.int8.onnx", "executorch": "model.pte",
         "executorch-int8": "model.int8.pte"}
BATCHES = (1, 8)
THREADS = ("1", "all")
CASES = list(itertools.product(MODELS, PATHS, BATCHES, THREADS))


@pytest.mark.parametrize(("model", "path", "batch", "threads"), CASES,
                         ids=[f"{m}-{p}-b{b}-t{t}" for m, p, b, t in CASES])
def test_latency(benchmark, exported, model, path, batch, threads):
    from edgekit.runtime import load

    run = exported(model)
    n = usable_cores() if threads == "all" else int(threads)
    file = PATHS[path]
    if file is not None and not (run / "export" / file).is_file():
        pytest.skip(f"{file}: this checkout's export does not write it yet")
    with np.load(run / "export" / "samples.npz", allow_pickle=False) as z:
        x = np.resize(z["x"], (batch, *z["x"].shape[1:])).astype(np.float32)  # (B, ...)

    benchmark.group = f"{model} batch {batch} threads {threads}"
    benchmark.extra_info.update(model=MODELS[model][0], path=path, batch=batch, threads=n,
                                file=file or "pytorch eager")
    if file is None:
        import torch

        from edgekit.training import load_run

        torch.set_num_threads(n)
        _, net, _ = load_run(run)
        t = torch.from_numpy(x)
        with torch.inference_mode():
            benchmark(net, t)
    else:
        runner = load(run / "export" / file, threads=n)  # TorchScript: sets torch's threads
        benchmark(runner.run, x)
