"""One table for a run: accuracy, size and latency of the trained model and each artifact."""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.table import table


def summarize(run: str | Path) -> str:
    """Read RUN/metrics.json, RUN/export/report.json and RUN/export/bench.json (if benched).

    Raises:
        EdgekitError: the run or its export is missing.
    """
    run = Path(run)
    metrics = _load(run / "metrics.json", "a run directory (run `edgekit train`)")
    report = _load(run / "export" / "report.json", "an export (run `edgekit export`)")
    bench_path = run / "export" / "bench.json"
    bench = _load(bench_path, "a benchmark") if bench_path.is_file() else None
    p50 = {r["file"]: r["p50_ms"] for r in bench["results"]} if bench else {}

    weights = run / "model.safetensors"
    size = f"{weights.stat().st_size / 1024:.1f}" if weights.is_file() else "-"
    rows = [("model", "format", "precision", "accuracy", "size KB", "p50 ms"),
            ("pytorch (trained)", "safetensors", "fp32", f"{report['pytorch']['accuracy']:.2%}",
             size, "-")]
    for a in report["artifacts"]:
        ms = p50.get(a["file"])
        rows.append((a["file"], a["format"], a["precision"], f"{a['accuracy']:.2%}",
                     f"{a['bytes'] / 1024:.1f}", f"{ms:.3f}" if ms is not None else "-"))
    lines = [f"{metrics['recipe']}: {metrics['model']} on {metrics['dataset']}, "
             f"{report['test_samples']} held-out samples", table(rows)]
    if bench:
        m = bench["machine"]
        lines.append(f"latency: batch {bench['settings']['batch']}, "
                     f"{bench['settings']['threads']} threads on {m['arch']} {m['cpu']}"
                     + (" (emulated)" if m["emulated"] else ""))
    return "\n".join(lines)


def _load(path: Path, what: str) -> dict:
    if not path.is_file():
        raise EdgekitError(f"{str(path.parent)!r} is not {what}: {path.name} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgekitError(f"{str(path)!r} is damaged: {e}") from None
