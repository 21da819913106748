"""What one `edgekit serve` request may take, and how many run at once (edgekit.runtime.serve)."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass
class Limits:
    """What one request may take. Defaults suit a Pi serving a small vision model."""

    max_body: int = 10 * 1024 * 1024  # bytes; 413 beyond
    timeout: float = 30.0  # seconds from the start of the body to the response; 504 beyond
    max_concurrent: int = 64  # requests in progress at once; 503 beyond
    # Threads that decode and run inputs at once (None: one per lane where the backend runs
    # concurrent calls, edgekit.runtime.batch.lanes_for; else 2).
    workers: int | None = None
    k: int = 3  # default top-k for classification: as `edgekit predict` (cli.common.TOP_K)
    # Dynamic batching (edgekit.runtime.batcher): inputs per model call, and the most a
    # request waits for others still decoding; max_batch 1 runs each request on its own.
    # None: 1 where the backend runs in lanes (a worker per core decoding and running its own
    # request on one thread beat batches of 2 under 4 clients: resnet18 int8, 2-core EPYC),
    # else 8.
    max_batch: int | None = None
    max_wait: float = 0.005  # seconds
    # Declared bytes of request bodies held at once (503 beyond; 0: 4 x max_body): with
    # decoding bounded by the workers and the pixel budget, this bounds the memory that
    # requests take together.
    body_memory: int = 0
    max_connections: int = 1024  # open at once; the oldest idle one is closed beyond
    header_timeout: float = 10.0  # seconds for a request's head to arrive whole; 408 beyond

    def settled(self, lanes: int = 1) -> Limits:
        """These limits with `workers` and `max_batch` decided for a backend with `lanes`."""
        return replace(self, workers=self.workers or (lanes if lanes > 1 else 2),
                       max_batch=self.max_batch or (1 if lanes > 1 else 8))
