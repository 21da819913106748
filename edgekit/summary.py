"""One table for a run: accuracy, size and latency of the trained model and each artifact."""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.machine import cpu_label
from edgekit.rundir import RunDir
from edgekit.table import table


def summarize(run: str | Path) -> str:
    """Read RUN/metrics.json, RUN/export/report.json and RUN/export/bench.json (if benched).

    Raises:
        EdgekitError: the run or its export is missing.
    """
    run = Path(run)
    metrics = _load(RunDir(run).metrics, "a run directory (run `edgekit train`)")
    report = _load(RunDir(run).report, "an export (run `edgekit export`)")
    bench_path = RunDir(run).bench
    bench = _load(bench_path, "a benchmark") if bench_path.is_file() else None
    p50, batch, threads = _latency(bench) if bench else ({}, None, None)

    from edgekit.tasks import get_task

    task = get_task(report.get("task", "classification"))  # accuracy, or mse for regression
    weights = RunDir(run).weights
    size = f"{weights.stat().st_size / 1024:.1f}" if weights.is_file() else "-"
    rows = [("model", "format", "precision", task.metric, "size KB", "p50 ms"),
            ("pytorch (trained)", "safetensors", "fp32", task.format(report['pytorch']['score']),
             size, "-")]
    for a in report["artifacts"]:
        ms = p50.get(a["file"])
        metric = "-" if a["score"] is None else task.format(a["score"])  # None: did not run
        rows.append((a["file"], a["format"], a["precision"], metric,
                     f"{a['bytes'] / 1024:.1f}", f"{ms:.3f}" if ms is not None else "-"))
    lines = [f"{metrics['recipe']}: {metrics['model']} on {metrics['dataset']}, "
             f"{report['test_samples']} held-out samples", table(rows)]
    if (metrics.get("qat") or {}).get("why_kept"):  # which QAT epoch, against plain int8
        lines.append(f"QAT: {metrics['qat']['why_kept']}")
    if bench:
        m = bench["machine"]
        lines.append(f"latency: batch {batch}, {threads} threads on {m['arch']} {cpu_label(m)}"
                     + (" (emulated)" if m["emulated"] else ""))
    return "\n".join(lines)


def _latency(bench: dict) -> tuple[dict, int, int]:
    """p50 per artifact file at the smallest batch and the most threads that were benched.

    Returns:
        ({file: p50 ms}, batch, threads).
    """
    settings = bench["settings"]
    # Before sweeps (schema 1) batch and threads were one number each, in the settings only.
    rows = [{"batch": settings["batch"], "threads": settings["threads"], **r}
            for r in bench["results"]]
    batch = min(r["batch"] for r in rows)
    threads = max(r["threads"] for r in rows if r["batch"] == batch)
    return ({r["file"]: r["p50_ms"] for r in rows
             if r["batch"] == batch and r["threads"] == threads}, batch, threads)


def _load(path: Path, what: str) -> dict:
    if not path.is_file():
        raise EdgekitError(f"{str(path.parent)!r} is not {what}: {path.name} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgekitError(f"{str(path)!r} is damaged: {e}") from None
