"""Time exported artifacts against each other on this machine, robustly enough to choose one.

The machine may be shared and noisy, so the artifacts are timed in interleaved rounds (each
round runs every artifact, starting from a different one) and each artifact's latency is the
median of its per-round medians: a noisy moment slows one round of every artifact, not all
rounds of one. The timings come from edgekit.bench.measure, the harness `edgekit bench` uses.
Each artifact gets a time budget, so tuning a large model stays bounded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROUNDS = 7
MAX_RUNS = 200  # per round: enough for a tiny model's median, cheap at 50 us a call


def time_artifacts(paths: list[Path], x: np.ndarray, threads: int, budget_s: float,
                   rounds: int = ROUNDS) -> dict[Path, dict]:
    """Latency of each artifact on input `x`, timed in interleaved rounds.

    Args:
        paths: artifacts that edgekit.runtime.load can run (.onnx, .ts).
        x: one model input batch (B, ...) float32.
        threads: intra-op threads for every backend.
        budget_s: seconds of timed calls per artifact; an artifact slower than
            budget_s / rounds still runs once a round (plus 3 sizing calls in all).

    Returns:
        path -> {"ms": median of round medians, "round_ms": [...], "runs_per_round": n}.
    """
    from edgekit.bench import measure
    from edgekit.runtime import load

    runners = {p: load(p, threads=threads) for p in paths}
    runs = {}
    for p, runner in runners.items():  # warm up, and size each round to the budget
        probe = float(measure(runner.run, x, runs=2, warmup=1).min())
        runs[p] = int(np.clip(budget_s * 1e3 / rounds / max(probe, 1e-3), 1, MAX_RUNS))
    rounds_ms: dict[Path, list[float]] = {p: [] for p in paths}
    order = list(paths)
    for i in range(rounds):
        for p in order[i % len(order):] + order[:i % len(order)]:
            # One untimed call first when the round has room: the previous artifact evicted
            # this one's weights from the caches.
            warm = 1 if runs[p] >= 4 else 0
            rounds_ms[p].append(float(np.median(measure(runners[p].run, x, runs=runs[p],
                                                         warmup=warm))))
    return {p: {"ms": float(np.median(rounds_ms[p])), "round_ms": [float(f"{v:.4g}") for v in ms],
                "runs_per_round": runs[p]} for p, ms in rounds_ms.items()}

