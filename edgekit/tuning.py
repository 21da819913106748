"""`edgekit tune`: choose, on the machine that will run them, the artifact and the thread count.

The export machine is not the deployment machine: `edgekit export --keep-candidates` ships
every int8 candidate that passed its check on the host (candidates/) beside the published
artifacts, with the host's outputs of each on samples.npz (references.npz). On the device,
`tune(EXPORT_DIR)`, for each thread count and each shipped file:

1. runs it on samples.npz and compares with the host's outputs of the same file: fp32 within
   FP32_RTOL of the outputs' range, int8 within INT8_RTOL and with the same top-1 on at least
   INT8_MIN_AGREEMENT of the samples. A kernel that miscomputes on this CPU is refused (one line
   naming the file and how far off it was), never timed, never picked;
2. times the ones that passed against each other in interleaved rounds with the `edgekit bench`
   harness (edgekit.benchmark.stats.time_interleaved), batch 1;
3. chooses by the one rule for "faster" (edgekit.benchmark.stats.pick; RULE below), writes
   tuned.json
   (edgekit.tuned: machine facts, the full table, the choice, checksums).

This module imports neither torch nor onnx: .ts and .pte files are skipped, and said why, on a
machine without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit import formats
from edgekit import manifest as mf
from edgekit.benchmark.stats import ROUNDS, threads_text
from edgekit.errors import EdgekitError
from edgekit.machine import check_threads, cpu_label, load_average
from edgekit.manifest import FILE as MANIFEST
from edgekit.manifest import REFERENCES, SAMPLES, check_sha256, sample_outputs

DEFAULT_SECONDS = 2.0  # timed seconds per file and thread count
FP32_RTOL = 1e-3  # fp32: largest difference allowed, of the outputs' range (at least 1)
FP16_RTOL = 1e-2
INT8_RTOL = 0.1  # int8 kernels round differently per CPU; a broken one is far beyond this
INT8_MIN_AGREEMENT = 0.9  # share of samples whose top-1 must match the host's
RULE = ("the lowest median wins only when its 95% interval overlaps no other's (edgekit "
        "bench's rule); within the noise of the fastest, tune prefers fewer threads, then a "
        "published artifact over a shipped candidate, then the smaller file")


@dataclass
class Shipped:
    """One file `tune` may choose: a published artifact or a shipped candidate."""

    file: str  # relative to the export directory ("model.int8.onnx", "candidates/...")
    path: Path
    fmt: formats.Format  # the backend that runs its suffix
    precision: str
    layout: str
    published: bool
    bytes: int | None
    skip: str  # why it is not tuned here ("" when it is)


def shipped(export: Path) -> tuple[dict, list[Shipped], dict[str, np.ndarray], np.ndarray]:
    """What an export ships for tuning; each file that will run is checked against its sha256.

    Returns:
        (manifest, the shipped files, file -> reference outputs, samples x).

    Raises:
        EdgekitError: not an export directory, one exported without --keep-candidates, or a
            file (artifact, candidate, references.npz, samples.npz) whose sha256 differs.
    """
    manifest = mf.read(export / MANIFEST)
    refs = manifest.get("references")
    if not isinstance(refs, dict) or not isinstance(refs.get("sha256"), str):
        raise EdgekitError(f"{str(export)!r} has no reference outputs to check against: "
                           "export it with `edgekit export RUN ... --keep-candidates`")
    check_sha256(export / REFERENCES, refs["sha256"])
    check_sha256(export / SAMPLES, refs.get("inputs_sha256", ""))
    with np.load(export / REFERENCES, allow_pickle=False) as z:
        outputs = {k: z[k] for k in z.files}
    with np.load(export / SAMPLES, allow_pickle=False) as z:
        x = z["x"]
    files = []
    listed = [(n, e, True) for n, e in manifest["artifacts"].items()] + [
        (n, e, False) for n, e in (manifest.get("candidates") or {}).items()]
    for name, entry, published in listed:
        path = export / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise EdgekitError(f"{str(export / MANIFEST)!r} lists {name!r}, which is outside "
                               "the export directory")
        fmt = formats.backends().get(path.suffix)
        if fmt is None:
            continue  # not a model file
        skip = ("failed its check at export" if entry.get("check", "passed") != "passed"
                else f"has no reference outputs in {REFERENCES}" if name not in outputs
                else fmt.install_hint() if fmt.missing() else wont_run_here(path, entry))
        if not skip:  # a file left out may be left behind too; one that runs must be intact
            check_sha256(path, entry["sha256"])
        files.append(Shipped(name, path, fmt, entry.get("precision", "?"),
                             entry.get("layout", ""), published, entry.get("bytes"), skip))
    return manifest, files, outputs, x


def wont_run_here(path: Path, entry: dict) -> str:
    """Why this machine's runtime would crash on `path` (a known case), else ""."""
    if path.suffix != ".pte":
        return ""
    from edgekit.runtime.pte import refusal

    return refusal(path, {"artifact": {"precision": entry.get("precision")}}) or ""


def compare(out: np.ndarray, ref: np.ndarray, precision: str, task) -> dict:
    """How far a file's outputs here are from the host's, and whether that passes.

    Returns:
        {"passed", "why" (one line when not), "max_abs_diff", "relative_diff" (of the
        outputs' range, at least 1), "top1_agreement" (None for regression)}.
    """
    if out.shape != ref.shape:
        return {"passed": False, "why": f"outputs of shape {list(out.shape)}, the reference's "
                f"are {list(ref.shape)}", "max_abs_diff": None, "relative_diff": None,
                "top1_agreement": None}
    diff = float(np.abs(out.astype(np.float64) - ref).max()) if out.size else 0.0
    if not np.isfinite(diff):
        diff = float("inf")
    rel = diff / max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
    agree = float((task.decode(out) == task.decode(ref)).mean()) \
        if task.higher_is_better and out.size else None
    if precision == "int8":
        rtol = INT8_RTOL
        passed = rel <= rtol and (agree is None or agree >= INT8_MIN_AGREEMENT)
    else:
        rtol = FP16_RTOL if precision == "fp16" else FP32_RTOL
        passed = rel <= rtol
    why = "" if passed else (
        f"outputs differ from the host's by {diff:.3g} ({rel:.1%} of their range, allowed "
        f"{rtol:.1%})" + ("" if agree is None else f", top-1 agrees on {agree:.0%} of "
                          f"{len(ref)} samples (needs {INT8_MIN_AGREEMENT:.0%})"
                          if precision == "int8" else ""))
    return {"passed": passed, "why": why, "max_abs_diff": diff, "relative_diff": rel,
            "top1_agreement": agree}


def default_threads() -> list[int]:
    """1, 2, 4, ... up to every usable core, and every core itself (a Pi: 1, 2, 4)."""
    from edgekit.machine import usable_cores

    cores = usable_cores()
    return sorted({*[2 ** i for i in range(cores.bit_length()) if 2 ** i <= cores], cores})


def tune(export: str | Path, threads: list[int] | None = None,
         seconds: float = DEFAULT_SECONDS) -> dict:
    """Check and time every shipped file at every thread count here; write tuned.json.

    Args:
        export: an export directory (or a run directory holding one) written with
            --keep-candidates.
        threads: thread counts to try (default: default_threads()).
        seconds: timed seconds per file and thread count, split over ROUNDS rounds.

    Returns:
        The tuned.json document (edgekit.tuned documents its keys).

    Raises:
        EdgekitError: a bad directory, setting or file (see `shipped`), or no file that
            computes the host's outputs here.
    """
    from edgekit import tuned as tj
    from edgekit.machine import machine_info
    from edgekit.tasks import get_task

    counts = list(dict.fromkeys(threads or default_threads()))
    if any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in counts):
        raise EdgekitError(f"threads: expected positive whole numbers, got {threads!r}")
    check_threads(max(counts))
    export = tj.export_dir(export)
    if not 0 < seconds < float("inf"):
        raise EdgekitError(f"--seconds {seconds!r}: expected a time budget > 0")
    manifest, files, refs, x = shipped(export)
    skipped = [f"{f.file}: {f.skip}" for f in files if f.skip]
    runnable = [f for f in files if not f.skip]
    if not runnable:
        raise EdgekitError(f"nothing to tune in {str(export)!r}: " + "; ".join(skipped))
    task = get_task(manifest["task"])
    rows, load_before = [], load_average()
    for t in counts:
        rows += _rows_at(runnable, t, refs, x, task, seconds)
    _add_efficiency(rows, {f.file: f.path for f in runnable}, counts)
    choice, verdict = choose(rows)
    doc = {"kind": tj.KIND, "schema": tj.SCHEMA, "machine": machine_info(),
           "settings": {"threads": counts, "seconds": seconds, "rounds": ROUNDS, "batch": 1,
                        "input": SAMPLES, "samples_checked": len(x),
                        "load_average_before": load_before, "load_average_after": load_average(),
                        "tolerances": {"fp32": FP32_RTOL, "fp16": FP16_RTOL, "int8": INT8_RTOL,
                                       "int8_min_top1_agreement": INT8_MIN_AGREEMENT}},
           "rule": RULE, "table": rows, "skipped": skipped,
           "refused": [r["refused"] for r in rows if "refused" in r],
           "verdict": verdict, "choice": choice}
    return tj.write(export, doc)


def _rows_at(files: list[Shipped], threads: int, refs: dict, x: np.ndarray, task,
             seconds: float) -> list[dict]:
    """One row per file at `threads`: its output check, and its timing if it passed."""
    from edgekit.benchmark.stats import NOISY_CV, latency_stats, time_interleaved
    from edgekit.runtime import load

    rows, passing = [], []
    for f in files:
        row = {"file": f.file, "format": f.fmt.format, "precision": f.precision,
               "layout": f.layout, "published": f.published, "bytes": f.bytes,
               "threads": threads}
        try:
            runner = load(f.path, threads=threads)
            row["check"] = compare(sample_outputs(runner, x), refs[f.file], f.precision, task)
        except EdgekitError as e:  # an operator this machine's runtime lacks
            runner, row["check"] = None, {"passed": False, "why": f"does not run here: {e}"}
        if not row["check"]["passed"]:
            row["refused"] = f"{f.file} ({threads_text(threads)}): {row['check']['why']}"
        else:
            passing.append((row, runner))
        rows.append(row)
    if passing:
        times = time_interleaved([r for _, r in passing], [x[:1]] * len(passing), threads,
                                 seconds=seconds)
        for (row, _), ms in zip(passing, times, strict=True):
            row.update(latency_stats(np.concatenate(ms)))
            row["noisy"] = row["cv"] > NOISY_CV
    return rows


def choose(rows: list[dict]) -> tuple[dict, str]:
    """The (file, threads) to run here, by RULE, and one line saying why.

    Raises:
        EdgekitError: no row passed its output check (naming why each was refused).
    """
    from edgekit.benchmark.stats import pick

    timed = [{**r, "name": f"{r['file']} @ {threads_text(r['threads'])}"} for r in rows
             if "p50_ms" in r]
    if not timed:
        raise EdgekitError("no shipped artifact computes the host's outputs on this machine: "
                           + "; ".join(r["refused"] for r in rows if "refused" in r))
    if len(timed) == 1:
        best, line = timed[0], f"only {timed[0]['name']} passed its output check"
    else:
        best, line = pick(timed, prefer=lambda r: (r["threads"], not r["published"], r["bytes"],
                                                   r["p50_ms"]),
                          name="name", tie_rule=RULE.split("; ")[1])
    choice = {"file": best["file"], "threads": best["threads"], "p50_ms": best["p50_ms"],
              "ci95_ms": best["ci95_ms"], "why": line}
    return choice, line


def _add_efficiency(rows: list[dict], paths: dict, counts: list[int]) -> None:
    """GMAC/s and % of this machine's GEMM peak per timed row (edgekit.benchmark.efficiency)."""
    from edgekit.benchmark.efficiency import artifact_macs, efficiency, peaks

    macs = {name: artifact_macs(path) for name, path in paths.items()}
    peak = peaks(counts, needed=any(macs.values()))
    for r in rows:
        if "p50_ms" in r:
            r.update(efficiency(macs[r["file"]], r["precision"], 1, r["p50_ms"],
                                peak[r["threads"]]))


def format_table(doc: dict) -> str:
    """tuned.json for people: machine line, one row per file and thread count, the choice."""
    from edgekit.benchmark.stats import ms_text
    from edgekit.table import table

    m = doc["machine"]
    head = (f"{m['arch']} {cpu_label(m)}, {m['usable_cores']} usable cores"
            + (" (EMULATED under qemu: not real timings)" if m.get("emulated") else "")
            + f"; batch 1, {doc['settings']['seconds']:g} s per file and thread count in "
              f"{doc['settings']['rounds']} interleaved rounds"
            + (f"; load average {doc['settings']['load_average_before'][0]:g} before, "
               f"{doc['settings']['load_average_after'][0]:g} after"
               if doc["settings"].get("load_average_after") else ""))
    from edgekit.benchmark.efficiency import efficiency_cells

    out = [("file", "precision", "layout", "threads", "output check", "p50 ms", "95% CI",
            "CV", "GMAC/s", "% peak", "chosen")]
    c = doc["choice"]
    for r in doc["table"]:
        timed = "p50_ms" in r
        out.append((r["file"], r["precision"], r["layout"] or "-", r["threads"],
                    "pass" if r["check"]["passed"] else "REFUSED",
                    ms_text(r["p50_ms"]) if timed else "-",
                    "-".join(ms_text(v) for v in r["ci95_ms"]) if timed else "-",
                    f"{r['cv']:.1%}" if timed else "-", *efficiency_cells(r),
                    "<-" if (r["file"], r["threads"]) == (c["file"], c["threads"]) else ""))
    return "\n".join([head, table(out), f"choice: {c['file']} with {threads_text(c['threads'])} "
                      f"({c['why']})"])

