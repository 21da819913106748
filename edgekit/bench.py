"""Latency of artifacts on this machine, and a description of the machine.

Timings are for whatever machine runs this; `machine_info()` records which one, including
whether an aarch64 Python is running under qemu-user emulation (then times are not Pi times).
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgekit import __version__
from edgekit.machine import machine_info
from edgekit.table import table


def bench(paths: list[str | Path], runs: int = 200, warmup: int = 20, threads: int | None = None,
          batch: int = 1) -> dict:
    """Time `runs` inferences of each artifact after `warmup` untimed ones.

    Args:
        paths: artifacts (.onnx, .ts) to load with edgekit.runtime.
        threads: intra-op threads for every backend; None = the number of cores.
        batch: inputs per inference; held-out samples shipped with the export when present.

    Returns:
        {"machine": ..., "settings": ..., "results": [per-artifact latency stats in ms]}.
    """
    from edgekit.runtime import load

    threads = threads or os.cpu_count() or 1
    runners = [load(p, threads=threads) for p in paths]  # fail on a bad path before timing
    results = []
    for runner in runners:
        x = _input(runner, batch)
        ms = measure(runner.run, x, runs=runs, warmup=warmup)
        precision = (runner.manifest or {}).get("artifact", {}).get("precision", "unknown")
        results.append({"artifact": str(runner.path), "file": runner.path.name,
                        "backend": runner.backend, "precision": precision,
                        "bytes": runner.path.stat().st_size, **latency_stats(ms)})
    return {
        "edgekit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {"runs": runs, "warmup": warmup, "threads": threads, "batch": batch},
        "results": results,
    }


def measure(fn, *args, runs: int = 200, warmup: int = 20) -> np.ndarray:
    """The timing harness every edgekit figure comes from (bench, export auto-tuning).

    Calls `fn(*args)` `warmup` times untimed, then `runs` times, each timed on its own.

    Returns:
        (runs,) latencies in milliseconds.
    """
    for _ in range(warmup):
        fn(*args)
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn(*args)
        times[i] = time.perf_counter() - t0
    return times * 1e3


def latency_stats(ms: np.ndarray) -> dict:
    """Percentiles and spread of latencies given in milliseconds."""
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"runs": len(ms), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "mean_ms": float(ms.mean()), "std_ms": float(ms.std()), "min_ms": float(ms.min())}


def format_table(report: dict) -> str:
    m = report["machine"]
    head = (f"{m['arch']} {m['cpu']}, {m['cores']} cores"
            + (" (EMULATED: not real ARM timings)" if m["emulated"] else "")
            + f"; batch {report['settings']['batch']}, {report['settings']['threads']} threads, "
            f"{report['settings']['runs']} runs")
    rows = [("artifact", "backend", "p50 ms", "p90 ms", "p99 ms")]
    rows += [(r["file"], r["backend"], f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}",
              f"{r['p99_ms']:.3f}") for r in report["results"]]
    return head + "\n" + table(rows)


def _input(runner, batch: int) -> np.ndarray:
    samples = runner.path.with_name("samples.npz")
    if samples.is_file():
        with np.load(samples, allow_pickle=False) as z:
            x = z["x"]
        if len(x):
            return np.resize(x, (batch, *x.shape[1:])).astype(np.float32)
    return runner.example_input(batch)
