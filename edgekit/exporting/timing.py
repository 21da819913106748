"""Time exported artifacts against each other on this machine, robustly enough to choose one.

The machine may be shared and noisy, so the artifacts are timed in interleaved rounds (each
round runs every artifact, starting from a different one) and each artifact's latency is the
median of its per-round medians: a noisy moment slows one round of every artifact, not all
rounds of one. The timings come from edgekit.benchmark.stats.time_interleaved, the harness
`edgekit bench` and `edgekit tune` use. Each artifact gets a time budget, so timing a large
model stays bounded.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

MAX_RUNS = 200  # per round: enough for a tiny model's median, cheap at 50 us a call


def time_artifacts(paths: list[Path], x: np.ndarray, threads: int,
                   budget_s: float) -> dict[Path, dict]:
    """Latency of each artifact on input `x`, timed in interleaved rounds.

    Args:
        paths: artifacts that edgekit.runtime.load can run (.onnx, .ts).
        x: one model input batch (B, ...) float32.
        threads: intra-op threads for every backend.
        budget_s: seconds of timed calls per artifact; an artifact slower than
            budget_s / ROUNDS still runs once a round (plus sizing and warm-up calls).

    Returns:
        path -> {"ms": median of round medians, "round_ms": [...], "runs_per_round": n,
        "ci95_ms": the 95% interval of the median of every timed call}.
    """
    from edgekit.benchmark.stats import ROUNDS, latency_stats, measure, time_interleaved
    from edgekit.runtime import load

    runners = [load(p, threads=threads) for p in paths]
    runs = []
    for runner in runners:  # warm up, and size each round to the budget
        probe = float(measure(runner.run, x, runs=2, warmup=1).min())
        runs.append(int(np.clip(budget_s * 1e3 / ROUNDS / max(probe, 1e-3), 1, MAX_RUNS)))
    times = time_interleaved(runners, [x] * len(runners), threads,
                             runs=[n * ROUNDS for n in runs], warmup=1)
    out = {}
    for p, n, per_round in zip(paths, runs, times, strict=True):
        medians = [float(np.median(ms)) for ms in per_round]
        out[p] = {"ms": float(np.median(medians)), "round_ms": [float(f"{v:.4g}") for v in medians],
                  "runs_per_round": n,
                  "ci95_ms": latency_stats(np.concatenate(per_round))["ci95_ms"]}
    return out


class Laps:
    """Wall and CPU seconds of each export stage, in order: `lap(name)` closes the stage `name`.

    CPU seconds are this process's, every thread (time.process_time): on a shared machine the
    wall clock says how long others' jobs held the cores, the CPU seconds what the export cost.
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.last, self.last_cpu = time.perf_counter(), time.process_time()

    def __call__(self, name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.seconds[name] = round(now - self.last, 2)
        self.cpu_seconds[name] = round(cpu - self.last_cpu, 2)
        self.last, self.last_cpu = now, cpu
