"""Dynamic batching for `edgekit serve`: concurrent requests share one model call.

Requests are decoded in parallel (serve's worker threads); each prepared input then joins a
queue that the model threads drain (one, or one per lane where the backend takes concurrent
calls: edgekit.runtime.batch.lanes_for): each takes what is queued, up to `max_batch` inputs, and
runs them as one batch, as Triton's and TorchServe's dynamic batchers do. It waits for more
only while other requests are still being decoded (they announce themselves with
`expect()`), and never more than `max_wait` seconds after the first input of the batch
arrived: that is the most batching adds to any request's latency. An idle server with one
client runs each request at once.

    batcher = Batcher(runner, max_batch=8, max_wait=0.005)
    with batcher.expecting():
        x = runner.prepare(body)            # (C, H, W), in a worker thread
    result = await batcher.infer(x, k)      # {"label", ..., "ms": {"queue", "model"}, "batch"}
    batcher.metrics()                       # queue time, batch sizes, decode and model time
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from edgekit.runtime.runner import Runner

RECENT = 1024  # requests whose times /metrics summarizes


@dataclass
class Waiting:
    """One prepared input in the queue."""

    x: np.ndarray  # (C, H, W): one input without its batch dimension
    k: int
    future: Future
    arrived: float = field(default_factory=time.perf_counter)


class Batcher:
    """`lanes` model threads running queued inputs in batches of up to `max_batch`.

    Args:
        max_wait: seconds the first input of a batch may wait for requests still decoding.
        lanes: model calls at once (a runner that takes concurrent calls: onnxruntime).
    """

    def __init__(self, runner: Runner, max_batch: int = 8, max_wait: float = 0.005,
                 lanes: int = 1):
        self.runner, self.max_batch, self.max_wait = runner, max_batch, max_wait
        self.lanes = lanes
        self.queue: deque[Waiting] = deque()
        self.decoding = 0  # requests being prepared: inputs about to join the queue
        self.ready = threading.Condition()
        self.closed = False
        self.batches: Counter = Counter()  # batch size -> model calls
        self.queue_ms: deque[float] = deque(maxlen=RECENT)
        self.model_ms: deque[float] = deque(maxlen=RECENT)  # per model call
        self.decode_ms: deque[float] = deque(maxlen=RECENT)
        self.threads = [threading.Thread(target=self._loop, name=f"edgekit-batcher-{i}",
                                         daemon=True) for i in range(lanes)]
        for thread in self.threads:
            thread.start()

    @contextmanager
    def expecting(self):
        """Around a request's decoding: the model thread may wait for its input."""
        t0 = time.perf_counter()
        with self.ready:
            self.decoding += 1
        try:
            yield
        finally:
            with self.ready:
                self.decoding -= 1
                self.decode_ms.append((time.perf_counter() - t0) * 1e3)
                self.ready.notify()

    def submit(self, x: np.ndarray, k: int) -> Future:
        """Queue one prepared input (C, H, W); the future gets its result dict."""
        item = Waiting(x, k, Future())
        with self.ready:
            if self.closed:
                raise RuntimeError("the batcher is closed")
            self.queue.append(item)
            self.ready.notify()
        return item.future

    async def infer(self, x: np.ndarray, k: int) -> dict:
        """`submit` from async code: the result of input `x` (C, H, W) once its batch ran."""
        return await asyncio.wrap_future(self.submit(x, k))

    def close(self) -> None:
        """Finish what is queued, then stop the model threads."""
        with self.ready:
            self.closed = True
            self.ready.notify_all()
        for thread in self.threads:
            thread.join()

    def _take(self) -> list[Waiting]:
        """The next batch: wait for a first input, then for the ones still decoding (at most
        `max_wait` after the first arrived), up to `max_batch`. [] once closed and empty."""
        with self.ready:
            while not self.queue and not self.closed:
                self.ready.wait()
            if not self.queue:
                return []
            deadline = self.queue[0].arrived + self.max_wait
            while len(self.queue) < self.max_batch and self.decoding and not self.closed:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self.ready.wait(left)
            return [self.queue.popleft() for _ in range(min(self.max_batch, len(self.queue)))]

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            self._run(batch)

    def _run(self, batch: list[Waiting]) -> None:
        """One model call for `batch`; each future gets its result or the error."""
        t0 = time.perf_counter()
        try:
            results = self.runner.infer(np.stack([w.x for w in batch]), max(w.k for w in batch))
        except Exception as e:  # the model failed: every request of the batch gets the error
            for w in batch:
                w.future.set_exception(e)
            return
        t1 = time.perf_counter()
        model_ms = (t1 - t0) * 1e3
        with self.ready:  # lanes count at once
            self.batches[len(batch)] += 1
        self.model_ms.append(model_ms)
        for w, result in zip(batch, results, strict=True):
            if "top" in result:  # each request asked for its own k
                result["top"] = result["top"][:w.k]
            queue_ms = (t0 - w.arrived) * 1e3
            self.queue_ms.append(queue_ms)
            result["batch"] = len(batch)
            result["ms"] = {"queue": round(queue_ms, 3), "model": round(model_ms, 3)}
            w.future.set_result(result)

    def metrics(self) -> dict:
        """Batch sizes and times of the recent requests, for GET /metrics."""
        calls = sum(self.batches.values())
        inputs = sum(size * n for size, n in self.batches.items())
        return {"max_batch": self.max_batch, "max_wait_ms": self.max_wait * 1e3,
                "lanes": self.lanes,
                "model_calls": calls, "inputs": inputs,
                "mean_batch": round(inputs / calls, 3) if calls else None,
                "batch_sizes": {str(size): n for size, n in sorted(self.batches.items())},
                "queue_ms": summary(self.queue_ms), "model_ms": summary(self.model_ms),
                "decode_ms": summary(self.decode_ms), "queued": len(self.queue),
                "decoding": self.decoding}


def summary(values) -> dict | None:
    """p50/p90/p99/max of recent times (ms), None before any."""
    if not values:
        return None
    a = np.asarray(values)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"count": len(a), "p50": round(float(p50), 3), "p90": round(float(p90), 3),
            "p99": round(float(p99), 3), "max": round(float(a.max()), 3)}


def metrics_endpoint(counters, batcher):
    """GET /metrics (serve): request counts and the batcher's batch sizes and times."""
    from starlette.responses import JSONResponse

    async def metrics(request) -> object:
        return JSONResponse({"requests": counters.requests, "errors": counters.errors,
                             "batching": batcher.metrics() if batcher else None})

    return metrics


def batcher_for(runner: Runner, limits, lanes: int = 1):
    """The dynamic batcher for `runner` under serve's `limits`, or None where requests cannot
    share a model call (max_batch 1, a stateful model, inputs of varying shape)."""
    fixed = all(type(d) is int for d in runner.input_shape[1:])
    if limits.max_batch <= 1 or runner.stateful or not fixed:
        return None
    return Batcher(runner, limits.max_batch, limits.max_wait, lanes)
