"""A bounded load test of `edgekit serve` on this machine (standard library + numpy only).

    with served("model.int8.onnx") as server:              # a child `edgekit serve --port 0`
        report = load_test(server.url, png_bytes, "image/png", clients=8, requests=500)
    report["requests_per_s"], report["p50_ms"], report["p99_ms"], report["errors"]

The test only targets loopback addresses and stops by itself: after `requests` requests or
`deadline` seconds, whichever comes first, each request bounded by `timeout`.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from edgekit.benchmark import latency_stats
from edgekit.errors import EdgekitError


def load_test(url: str, body: bytes | list[bytes], content_type: str, clients: int = 8,
              requests: int = 500, timeout: float = 10.0, deadline: float = 120.0,
              path: str = "/predict") -> dict:
    """POST `body` `requests` times from `clients` threads, each on its own keep-alive
    connection, and report throughput and latency. A list of bodies is sent in turn (request
    i sends body i modulo their number).

    A request is an error unless it gets a 200 with a JSON body; errors are counted, the first
    few kept, and the client reconnects.

    Returns:
        {"requests", "errors", "error_samples", "clients", "seconds", "requests_per_s",
         "p50_ms", "p90_ms", "p99_ms", ...} (latencies of the successful requests).

    Raises:
        EdgekitError: `url` is not a loopback address.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise EdgekitError(f"load_test targets this machine only (loopback); got {host!r}")
    bodies = body if isinstance(body, list) else [body]
    counter = iter(range(requests))  # shared: next() is atomic under the GIL
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.monotonic() + deadline

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        mine = []
        for i in counter:
            if time.monotonic() > stop_at:
                break
            data = bodies[i % len(bodies)]
            headers = {"Content-Type": content_type, "Content-Length": str(len(data))}
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, data, headers)
                response = conn.getresponse()
                data = response.read()
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}: {data[:200]!r}")
                json.loads(data)
                mine.append(time.perf_counter() - t0)
            except (OSError, ValueError, http.client.HTTPException) as e:
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline + timeout + 5)
    seconds = time.perf_counter() - start
    done = len(latencies) + len(errors)
    report = {"requests": done, "errors": len(errors), "error_samples": errors[:5],
              "clients": clients, "seconds": seconds,
              "requests_per_s": len(latencies) / seconds if seconds > 0 else 0.0,
              "stopped_by_deadline": done < requests}
    if latencies:
        report.update(latency_stats(np.asarray(latencies) * 1e3))
    return report


@dataclass
class Served:
    """A running `edgekit serve` child: its URL, process and what it printed on stderr."""

    url: str
    proc: subprocess.Popen
    stderr: list[str]


@contextmanager
def served(artifact, *args: str, startup_timeout: float = 60.0,
           env: dict | None = None, python: str | None = None) -> Iterator[Served]:
    """Run `edgekit serve ARTIFACT --port 0 ARGS...` in a child process and yield it (.url).

    On exit the child gets SIGTERM and must stop by itself (exit 0) within 30 s.

    Raises:
        EdgekitError: the server did not start (its stderr is in the message) or did not
            stop cleanly.
    """
    cmd = [python or sys.executable, "-m", "edgekit", "serve", str(artifact), "--port", "0",
           *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    lines: queue.Queue = queue.Queue()
    stderr: list[str] = []

    def pump() -> None:
        for line in proc.stderr:
            stderr.append(line)
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    url = None
    end = time.monotonic() + startup_timeout
    while url is None and time.monotonic() < end:
        try:
            line = lines.get(timeout=max(0.01, end - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        if " on http://" in line:
            url = line.split(" on ", 1)[1].split()[0]
    if url is None:
        proc.kill()
        proc.wait()
        raise EdgekitError(f"edgekit serve did not start: {''.join(stderr).strip()[-500:]}")
    try:
        yield Served(url, proc, stderr)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        reader.join(timeout=30)  # its last lines ("stopped after ...") are in `stderr` on return
        if code != 0:
            raise EdgekitError(f"edgekit serve did not stop cleanly on SIGTERM (exit {code}): "
                               f"{''.join(stderr).strip()[-500:]}")
