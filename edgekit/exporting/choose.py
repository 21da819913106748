"""Time the checked artifacts on this machine and choose which candidate each format publishes.

One rule for "faster", the one `edgekit bench` and `edgekit tune` use (edgekit.bench.stats.pick):
the lowest median wins only when its 95% interval of the median overlaps no other's; within the
noise of it, the target's documented order decides. So the target's documented layout (its
first candidate) stays unless another is faster beyond the noise.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.exporting.check import Check


@dataclass
class Candidate:
    """A written file of one format, and its check."""

    fmt: object  # edgekit.formats.Format
    path: Path
    how: dict  # how it was made ({} for fp32; the int8 layout)
    check: Check | None = None
    kept: bool = False  # from the previous export, not rebuilt
    chosen: bool = False

    @property
    def ms(self) -> float | None:
        return self.check.latency_ms


def time_candidates(target, budget: float, cands: list[Candidate], x: np.ndarray) -> dict:
    """Time every artifact and candidate that passed its check, when the target is here.

    Returns:
        The report's "tuning" entry: whether it timed, and with which settings (or why not).
    """
    from edgekit.bench.stats import ROUNDS
    from edgekit.exporting.timing import time_artifacts
    from edgekit.machine import usable_cores

    if not target.tune:
        return {"timed": False, "why": f"--target {target.name} is not this machine"}
    if budget <= 0:
        return {"timed": False, "why": "export.tune_seconds is 0"}
    timed = [c for c in cands if c.check.passed]
    if not timed:
        return {"timed": False, "why": "no artifact passed its check"}
    threads = usable_cores()
    t0 = time.perf_counter()
    times = time_artifacts([c.path for c in timed], x, threads=threads, budget_s=budget)
    for c in timed:
        c.check.latency_ms, c.check.timing = times[c.path]["ms"], times[c.path]
    return {"timed": True, "threads": threads, "batch": len(x), "rounds": ROUNDS,
            "budget_s_per_artifact": budget, "artifacts": len(timed),
            "seconds": round(time.perf_counter() - t0, 2)}


def drop_failed_best_effort(cands: list[Candidate], skipped: list[str]) -> list[Candidate]:
    """A best-effort format none of whose candidates passed is not published: it is said why."""
    failed = {c.fmt.name for c in cands if c.fmt.best_effort} - {
        c.fmt.name for c in cands if c.check.passed}
    for c in cands:
        if c.fmt.name in failed:
            skipped.append(f"{c.fmt.file} was not written: its check failed: {c.check.why}")
            c.path.unlink(missing_ok=True)
    return [c for c in cands if c.fmt.name not in failed]


def choose(cands: list[Candidate]) -> Candidate:
    """The candidate to publish among those written for one format.

    The first passing one (the target's documented layout) unless another is faster beyond
    the noise; with none passing (only reached with allow_degraded), the most accurate one,
    marked degraded.
    """
    from edgekit.bench.stats import pick

    passing = [c for c in cands if c.check.passed]
    if not passing:
        best = min(cands, key=lambda c: c.check.badness())
        best.check.degraded = True
        return best
    if passing[0].ms is None or not any(c.ms is not None for c in passing):
        return passing[0]
    rows = [{"index": i, "p50_ms": c.ms,
             "ci95_ms": (c.check.timing or {}).get("ci95_ms", [c.ms, c.ms])}
            for i, c in enumerate(passing) if c.ms is not None]
    best, _ = pick(rows, prefer=lambda r: r["index"], name="index")
    return passing[best["index"]]


def speed_line(artifacts: list[Candidate], target, tuning: dict) -> str:
    """One line: which artifact is fastest here, and whether int8 beat fp32 at all."""
    int8 = [c for c in artifacts if c.fmt.precision == "int8" and not c.kept]
    if not tuning.get("timed"):
        if not int8:
            return ""
        layouts = ", ".join(f"{c.fmt.file} {c.check.details.get('layout', '')}".strip()
                            for c in int8)
        return (f"int8 for target {target.name}: {layouts}, the target's documented layout; "
                f"not timed ({tuning.get('why', '')})")
    timed = [c for c in artifacts if c.ms is not None]
    fp32 = [c for c in timed if c.fmt.precision == "fp32"]
    fast8 = [c for c in timed if c.fmt.precision == "int8"]
    if fast8 and fp32:
        b8, b32 = min(fast8, key=lambda c: c.ms), min(fp32, key=lambda c: c.ms)
        name8 = f"{b8.fmt.file} ({b8.check.details.get('layout', 'int8')})"
        if b8.ms < b32.ms:
            return (f"int8 is faster here: {name8} {b8.ms:.3f} ms, {b32.ms / b8.ms:.1f}x "
                    f"{b32.fmt.file} ({b32.ms:.3f} ms)")
        twin = [a for a in artifacts if a.fmt.format == b8.fmt.format
                and a.fmt.precision == "fp32"]
        size = b8.check.bytes / max(1, twin[0].check.bytes if twin else 0)
        return (f"no int8 candidate beat fp32 on this machine: the fastest, {name8}, took "
                f"{b8.ms:.3f} ms against {b32.fmt.file}'s {b32.ms:.3f} ms; deploy "
                f"{b32.fmt.file} for speed (int8 only saves size here: {size:.0%} of fp32)")
    best = min(timed, key=lambda c: c.ms) if timed else None
    return f"fastest here: {best.fmt.file} {best.ms:.3f} ms" if best else ""


def fastest(artifacts: list[Candidate]) -> dict | None:
    """The report's "fastest" entry: the quickest timed artifact, if any was timed."""
    timed = [c for c in artifacts if c.ms is not None]
    if not timed:
        return None
    best = min(timed, key=lambda c: c.ms)
    return {"file": best.fmt.file, "latency_ms": best.ms}


def move_choice(stage: Path, cands: list[Candidate]) -> Candidate:
    """Choose one candidate of a format and move it to the format's file name."""
    best = choose(cands)
    best.chosen = True
    if best.path != stage / best.fmt.file:
        os.replace(best.path, stage / best.fmt.file)
        best.path = stage / best.fmt.file
    return best
