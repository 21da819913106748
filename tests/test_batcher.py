"""serve's dynamic batcher: who runs with whom, each answer its own, errors, metrics."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fakerunner import FakeRunner

from edgekit.errors import EdgekitError
from edgekit.runtime.batcher import Batcher


def test_batcher_runs_concurrent_inputs_together_and_answers_each_its_own():
    runner = FakeRunner()
    batcher = Batcher(runner, max_batch=4, max_wait=5.0)  # a long wait: sizes are certain
    try:
        contexts = [batcher.expecting() for _ in range(6)]
        for c in contexts:
            c.__enter__()  # six requests decoding
        futures = []
        for i, c in enumerate(contexts):
            futures.append(batcher.submit(np.full((1, 2, 2), float(i), np.float32), k=i % 3 + 1))
            c.__exit__(None, None, None)
        results = [f.result(timeout=30) for f in futures]
    finally:
        batcher.close()
    assert [r["label"] for r in results] == [str(i) for i in range(6)]
    assert [len(r["top"]) for r in results] == [1, 2, 3, 1, 2, 3]  # each its own k
    assert runner.batches == [4, 2] and [r["batch"] for r in results] == [4] * 4 + [2] * 2
    metrics = batcher.metrics()
    assert metrics["model_calls"] == 2 and metrics["inputs"] == 6
    assert metrics["batch_sizes"] == {"2": 1, "4": 1} and metrics["queue_ms"]["count"] == 6
    assert metrics["decode_ms"]["count"] == 6 and metrics["mean_batch"] == 3


def test_batcher_does_not_wait_when_nothing_else_is_decoding():
    """One client on an idle server: its input runs at once, in a batch of one, although
    max_wait is long (only requests still decoding are waited for)."""
    runner = FakeRunner()
    batcher = Batcher(runner, max_batch=8, max_wait=600.0)
    try:
        for i in range(3):
            assert batcher.submit(np.full((1, 2, 2), i, np.float32), 1).result(30)["batch"] == 1
    finally:
        batcher.close()
    assert runner.batches == [1, 1, 1]


def test_batcher_gives_every_request_of_a_failed_batch_the_error():
    class Broken(FakeRunner):
        def infer(self, x, k=5):
            raise EdgekitError("the model failed")

    batcher = Batcher(Broken(), max_batch=4, max_wait=0.001)
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = list(pool.map(lambda i: batcher.submit(np.zeros((1, 2, 2)), 1), range(4)))
        for f in futures:
            with pytest.raises(EdgekitError, match="the model failed"):
                f.result(30)
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(np.zeros((1, 2, 2)), 1)


def test_batcher_lanes_run_model_calls_at_once_each_answer_its_own():
    """Two lanes: two model calls meet inside the model (a barrier only two concurrent calls
    pass), and every input still gets its own answer."""
    import threading

    class Meeting(FakeRunner):
        def __init__(self):
            super().__init__()
            self.barrier = threading.Barrier(2, timeout=60)

        def infer(self, x, k=5):
            self.barrier.wait()  # raises BrokenBarrierError if the calls ran one at a time
            return super().infer(x, k)

    runner = Meeting()
    batcher = Batcher(runner, max_batch=1, max_wait=0.0, lanes=2)
    try:
        futures = [batcher.submit(np.full((1, 2, 2), float(i), np.float32), k=1)
                   for i in range(4)]
        results = [f.result(timeout=120) for f in futures]
    finally:
        batcher.close()
    assert [r["label"] for r in results] == ["0", "1", "2", "3"]
    assert batcher.metrics()["lanes"] == 2 and batcher.metrics()["model_calls"] == 4
