"""`edgekit bench`: time artifacts on this machine over batch sizes and thread counts.

For each thread count every artifact is loaded once; for each batch size the artifacts are
timed in interleaved rounds (edgekit.benchmark.stats.time_interleaved), so a slow phase of a
shared machine hits all of them alike and their ratios stay honest. Each result carries the
machine facts (`edgekit.machine.machine_info()`); under qemu-user emulation `machine.emulated`
is true and the times are not ARM timings.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgekit import __version__, formats
from edgekit.benchmark.efficiency import (
    artifact_macs,
    efficiency,
    efficiency_cells,
    peak_lines,
    peaks,
)
from edgekit.benchmark.stats import (
    NOISY_CV,
    ROUNDS,
    latency_stats,
    ms_text,
    noise_warning,
    threads_text,
    time_interleaved,
    verdict,
)
from edgekit.errors import EdgekitError
from edgekit.machine import cpu_label, load_average, machine_info, usable_cores
from edgekit.rundir import REPORT, RunDir
from edgekit.table import flagged, table

KIND = "edgekit-bench"  # the "kind" of the JSON this writes; README "Bench JSON" documents it
SCHEMA = 2


def bench(paths: list[str | Path], runs: int = 200, warmup: int = 20,
          threads: int | list[int] | None = None, batch: int | list[int] = 1, *,
          seconds: float | None = None) -> dict:
    """Time every artifact at every (threads, batch) setting after a warm-up.

    Args:
        paths: artifacts (.onnx, .ts), or run/export directories: each directory stands for
            every artifact its export verified (report.json rows that passed).
        runs: timed calls per artifact and setting (ignored when `seconds` is given).
        warmup: untimed calls before the first timed one.
        threads: intra-op threads, one count or several; None = every core this process may use.
        batch: inputs per call, one size or several; held-out samples shipped with the export
            when present, else random inputs of the model's shape.
        seconds: a time budget per artifact and setting instead of a run count.

    Returns:
        {"kind", "schema", "machine", "settings", "results": [one per artifact, threads and
        batch], "comparisons": [fastest-or-tie per setting], "warnings": [...],
        "skipped": [...]}; documented in README ("Bench JSON").

    Raises:
        EdgekitError: a bad path, a directory with no verified artifact, or a bad setting.
    """
    from edgekit.runtime import load

    threads_list = _positive_list(threads if threads is not None else usable_cores(), "threads")
    batches = _positive_list(batch, "batch")
    if seconds is None and runs < 1:
        raise EdgekitError(f"runs: expected a value >= 1, got {runs}")
    if seconds is not None and not seconds > 0:
        raise EdgekitError(f"seconds: expected a value > 0, got {seconds}")
    files, skipped = expand(paths)
    rounds = ROUNDS if seconds is not None else min(ROUNDS, runs)
    load_before = load_average()
    runners = [load(p, threads=threads_list[0]) for p in files]  # bad paths fail before timing
    macs = {p: artifact_macs(p) for p in files}  # MACs per input; the peak is measured once
    peak = peaks(threads_list, needed=any(macs.values()))  # per machine, cached

    results, comparisons, warnings = [], [], []
    for t in threads_list:
        if t != threads_list[0]:
            runners = [load(p, threads=t) for p in files]
        for b in batches:
            times = [np.concatenate(ms) for ms in time_interleaved(
                runners, [_input(r, b) for r in runners], t, runs=runs, seconds=seconds,
                warmup=warmup, rounds=rounds)]
            group = []
            for p, runner, ms in zip(files, runners, times, strict=True):
                row = {**_describe(runner), "batch": b, "threads": t,
                       **latency_stats(ms, batch=b)}
                row.update(efficiency(macs[p], row["precision"], b, row["p50_ms"], peak[t]))
                row["noisy"] = row["cv"] > NOISY_CV
                line = noise_warning(row, f"{row['label']} (batch {b}, {threads_text(t)})")
                if line:
                    warnings.append(line)
                group.append(row)
            for model in dict.fromkeys(r["model"] for r in group):  # artifacts of one model
                same = [r for r in group if r["model"] == model]
                names = [r["file"] for r in same]  # the paths where two runs share file names
                name = "file" if len(set(names)) == len(names) else "artifact"
                if len(same) > 1:
                    comparisons.append({"model": model, "batch": b, "threads": t,
                                        **verdict(same, name=name)})
            results += group
    return {
        "kind": KIND, "schema": SCHEMA,
        "edgekit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {"runs": None if seconds else runs, "seconds": seconds, "warmup": warmup,
                     "rounds": rounds, "threads": threads_list, "batch": batches,
                     "load_average_before": load_before, "load_average_after": load_average()},
        "results": results,
        "gemm_peak": {str(t): v for t, v in peak.items() if v},
        "comparisons": comparisons,
        "warnings": warnings,
        "skipped": skipped,
    }


def expand(paths: list[str | Path]) -> tuple[list[Path], list[str]]:
    """Artifact files for `paths`: files as given, directories as their verified artifacts.

    A directory is a run (with export/report.json) or an export folder (with report.json).
    Artifacts whose check failed are left out, and so is TorchScript when torch is missing.

    Returns:
        (artifact paths, one line per artifact left out and why).

    Raises:
        EdgekitError: a directory that is neither, or one with no verified artifact.
    """
    files: list[Path] = []
    skipped: list[str] = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)  # runtime.load names a missing file or a wrong suffix
            continue
        export = RunDir(path).export if RunDir(path).report.is_file() else path
        report_path = export / REPORT
        if not report_path.is_file():
            raise EdgekitError(f"{str(path)!r} is a directory but not a run or export "
                               "directory (no export/report.json); expected an artifact file "
                               "(.onnx, .ts) or a run exported with `edgekit export`")
        try:
            rows = json.loads(report_path.read_text(encoding="utf-8"))["artifacts"]
        except (ValueError, KeyError, TypeError):
            raise EdgekitError(f"{str(report_path)!r} is damaged; re-run `edgekit export`") \
                from None
        found = []
        for row in rows:
            artifact, fmt = export / row["file"], formats.backends().get(Path(row["file"]).suffix)
            if not row.get("passed"):
                skipped.append(f"{artifact}: failed its export check"
                               + (" (kept by --allow-degraded)" if row.get("degraded") else ""))
            elif not artifact.is_file():
                skipped.append(f"{artifact}: listed in report.json but missing")
            elif fmt is not None and fmt.missing():
                skipped.append(f"{artifact}: {fmt.title} needs {' and '.join(fmt.missing())}, "
                               "which is not installed")
            else:
                found.append(artifact)
        if not found:
            raise EdgekitError(f"{str(path)!r} has no verified artifact to benchmark"
                               + (f" ({'; '.join(skipped)})" if skipped else ""))
        files += found
    unique, seen = [], set()
    for file in files:  # each file once, in the order given
        if file.resolve() not in seen:
            seen.add(file.resolve())
            unique.append(file)
    return unique, skipped


def format_table(report: dict) -> str:
    """The console view of a bench report: machine line, one row per result, verdicts."""
    m, s = report["machine"], report["settings"]
    what = f"{s['seconds']:g} s per artifact" if s.get("seconds") else f"{s['runs']} runs"
    head = (f"{m['arch']} {cpu_label(m)}, {m['cores']} cores"
            + (" (EMULATED under qemu: not real ARM timings)" if m["emulated"] else "")
            + f"; {what} after {s['warmup']} warm-up, interleaved in {s['rounds']} rounds")
    rows = [("artifact", "precision", "batch", "threads", "runs", "p50 ms", "95% CI p50",
             "p90 ms", "p99 ms", "mean ms", "std ms", "CV", "items/s", "GMAC/s", "% peak")]
    results = report["results"]
    cv = flagged([f"{r['cv']:.1%}" for r in results], [r["noisy"] for r in results], "CV")
    for r, cv_cell in zip(results, cv, strict=True):
        low, high = r["ci95_ms"]
        rows.append((r["file"], r["precision"], r["batch"], r["threads"], r["runs"],
                     ms_text(r["p50_ms"]), f"{ms_text(low)}-{ms_text(high)}", ms_text(r["p90_ms"]),
                     ms_text(r["p99_ms"]), ms_text(r["mean_ms"]), ms_text(r["std_ms"]), cv_cell,
                     f"{r['throughput_per_s']:.4g}", *efficiency_cells(r)))
    lines = [head, table(rows), *peak_lines(report)]
    for c in report["comparisons"]:
        lines.append(f"{c['model']}, batch {c['batch']}, {threads_text(c['threads'])}: {c['text']}")
    return "\n".join(lines)


def _describe(runner) -> dict:
    """Which artifact a result is about, from its path and embedded manifest."""
    manifest = runner.manifest or {}
    artifact = manifest.get("artifact", {})
    model = manifest.get("recipe") or manifest.get("model") or runner.path.parent.name
    return {"label": f"{model}/{runner.path.name}", "model": model,
            "artifact": str(runner.path), "file": runner.path.name, "backend": runner.backend,
            "format": artifact.get("format", runner.path.suffix.lstrip(".")),
            "precision": artifact.get("precision", "unknown"),
            "bytes": runner.path.stat().st_size, "input": _input_kind(runner)}


def _input(runner, batch: int) -> np.ndarray:
    samples = runner.path.with_name("samples.npz")
    if samples.is_file():
        with np.load(samples, allow_pickle=False) as z:
            x = z["x"]
        if len(x):
            return np.resize(x, (batch, *x.shape[1:])).astype(runner.input_dtype)  # or int64
    return runner.example_input(batch)


def _input_kind(runner) -> str:
    return "held-out samples" if runner.path.with_name("samples.npz").is_file() else "random"


def _positive_list(value, what: str) -> list[int]:
    values = [value] if isinstance(value, int) else list(value)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise EdgekitError(f"{what}: expected positive whole numbers, got {value!r}")
    return list(dict.fromkeys(values))  # in the order given, each once


