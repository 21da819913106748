"""`edgekit export`: write each artifact, check it against the PyTorch model, then publish.

The export pipeline. Its stages sit at its top: prepare.py, check.py, timing.py (time
artifacts against each other), choose.py, report.py, previous.py (what a re-export keeps),
ship.py (--keep-candidates); formats/ holds one exporter per format, int8/ the int8 scheme,
targets, accuracy search, sensitivity and QAT export. What an export ships to the device, and
its names, is edgekit.manifest.

Five stages, each a short function: prepare (edgekit.exporting.prepare) -> write the candidates
(each format's exporter module, from the format catalog edgekit.formats) -> check them
(edgekit.exporting.check) -> time and choose (edgekit.exporting.choose) -> publish (manifest,
samples, report: edgekit.exporting.report). Everything is written into a staging folder and moved
to RUN/export only after every check passed, so a failed export leaves the previous export (or
nothing) in place:

    RUN/export/model.onnx, model.int8.onnx, ...    the artifacts the catalog names
    RUN/export/manifest.json                       contract + sha256 of each artifact
    RUN/export/samples.npz                         held-out inputs (predict --sample)
    RUN/export/report.json, report.md              checks, int8 candidates, timings
    RUN/export/sensitivity*.png                    int8 error per layer (a chart per format)
    RUN/export/candidates/, references.npz         with --keep-candidates, for `edgekit tune`

Re-exporting rebuilds only the formats asked for; every other file of the previous export is
kept. Exports of one run are serialized by RUN/.export.lock (a second waits for the first). An
int8 format writes one candidate per layout its target lists (exporting.int8.targets); for
`--target local` the candidates are timed and the fastest that passes is published.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import formats as catalog
from edgekit.errors import EdgekitError
from edgekit.exporting import ship
from edgekit.exporting.check import check_artifact
from edgekit.exporting.choose import (
    Candidate,
    drop_failed_best_effort,
    move_choice,
    time_candidates,
)
from edgekit.exporting.int8 import mixed
from edgekit.exporting.int8.qat import LEARNED
from edgekit.exporting.prepare import Options, Prepared, before_torch, prepare
from edgekit.exporting.previous import keep_previous, notes
from edgekit.exporting.report import build_report, manifest_entry, report_markdown
from edgekit.exporting.timing import Laps
from edgekit.fileio import atomic_dir, atomic_path, exclusive, write_json, write_text
from edgekit.rundir import REPORT, REPORT_MD, RunDir

__all__ = ["export", "report_markdown", "ExportContext"]

LOCK = ".export.lock"  # in the run directory: held while an export stages and publishes


@dataclass
class ExportContext:
    """What every format's exporter `write(ctx, path, manifest)` may use."""

    model: Any  # nn.Module in eval mode on CPU
    example: Any  # torch.Tensor (2, ...) to trace with, or (input, state) for a stateful model
    cfg: Any  # the recipe's ExportConfig
    calibration: np.ndarray  # (N, ...) training inputs that set int8 ranges
    stage: Path  # the folder being written; earlier artifacts are there
    target: Any  # edgekit.exporting.int8.targets.Target
    int8: Any  # edgekit.exporting.int8.plan.Int8Plan, or None when no int8 format is asked for
    candidates: Path  # scratch folder for candidate files, removed before publishing
    qat: Any = None  # a QAT run's fake-quantized model: int8 takes its learned ranges
    source: Path | None = None  # an imported ONNX file, when model is None (no PyTorch)
    # What the writes of one export share (the same model and calibration inputs): the
    # exported graph and calibrated observers of PT2E (formats.pte_int8.quantize_pt2e)
    memo: dict = field(default_factory=dict)


def export(run: str | Path, formats: list[str], **options) -> dict:
    """Export a trained run and check each artifact on the held-out split.

    Args:
        run: a run directory written by `edgekit train`.
        formats: names in the format catalog (edgekit.formats: "onnx", "onnx-int8",
            "onnx-fp16", "torchscript", "torchscript-int8", ...); only these are rebuilt.
        options: edgekit.exporting.prepare.Options: target ("local" or a preset of
            edgekit.exporting.int8.targets), int8_method, exclude (module names kept fp32 in int8),
            allow_degraded (keep an artifact that fails, recorded as failed), max_int8_drop,
            tune_seconds (timing budget per artifact for `local`; 0 times nothing), machine,
            int8_fallback (an int8 format that fails its gate: search calibration methods,
            then keep the most sensitive layers fp32; False fails instead).
            keep_candidates (ship every passing int8 candidate: edgekit.exporting.ship).

    Returns:
        The report (also written as report.json / report.md).

    Raises:
        EdgekitError: unknown or missing formats or target, a missing or damaged run, data
            that no longer match training's, an operator a format cannot export, or an
            artifact that fails its check (unless allow_degraded).
    """
    before_torch()  # huge pages, passive OpenMP (edgekit.exporting.prepare.TORCH_ENV)
    started = time.perf_counter()
    lap = Laps()
    opts = Options(**options)
    prep = prepare(run, catalog.ordered(formats), opts)
    lap("prepare")  # with the fast image path's check (edgekit.exporting.fastpath)
    out = RunDir(run).export
    rebuilt = {f.file for f in prep.formats}
    # One export of a run at a time: each builds on the files of the export before it, so a
    # second one staged meanwhile would publish without the first one's artifacts.
    with exclusive(Path(run) / LOCK, f"an export of {run}"), atomic_dir(out) as stage:
        kept_files = keep_previous(out, stage, rebuilt)
        ctx = ExportContext(prep.model, prep.example, prep.cfg, prep.calibration, stage,
                            prep.target, prep.plan, stage / ".candidates", prep.qat, prep.source)
        cands, skipped = write_candidates(prep, ctx)
        lap("write")
        kept = [Candidate(catalog.by_file(f), stage / f, {}, kept=True) for f in kept_files
                if catalog.by_file(f)]
        for c in cands + kept:
            c.check = check_artifact(c.path, c.fmt, prep.held, prep.gate)
        lap("check")
        # int8 failing its gate: calibration search, then layers kept fp32 (mixed.py)
        checker = mixed.Checker(prep.held, prep.gate)
        rescued, fixed = mixed.rescue(ctx, cands, checker, prep.budget) \
            if opts.int8_fallback else ([], {})
        lap("int8 search")
        cands = drop_failed_best_effort(cands + rescued, skipped)
        _fail_fast(prep, cands, opts.allow_degraded)
        tuning = time_candidates(prep.target, prep.budget, cands + kept, prep.held.x[:1])
        lap("timing")
        chosen = [move_choice(stage, [c for c in cands if c.fmt is f]) for f in prep.formats
                  if any(c.fmt is f for c in cands)]
        int8_accuracy = mixed.table(ctx, chosen, checker, fixed)  # ranked layers + chart
        lap("int8 layer table")
        shipped = ship.keep(stage, cands, opts.keep_candidates, skipped)  # else dropped
        final = sorted(chosen + kept, key=lambda c: catalog.formats().index(c.fmt))
        report = build_report(prep, final, cands, tuning, kept_files,
                              skipped + notes(stage, rebuilt, kept))
        report.update(int8_accuracy=int8_accuracy, fast_preprocessing=prep.fast,
                      stage_seconds=lap.seconds, stage_cpu_seconds=lap.cpu_seconds)
        publish(stage, prep, final, report, started, shipped, opts.keep_candidates)
    return report


def write_candidates(prep: Prepared, ctx: ExportContext) -> tuple[list[Candidate], list[str]]:
    """Every asked format's exporter writes its file(s) into the stage, in catalog order.

    Returns:
        (the candidates, one line per best-effort format the model cannot take).
    """
    stage = ctx.stage
    ctx.candidates.mkdir()
    cands, skipped = [], []
    for fmt in prep.formats:
        own = {**prep.manifest, "artifact": {"file": fmt.file, "format": fmt.format,
                                             "precision": fmt.precision}}
        try:
            written = importlib.import_module(fmt.exporter).write(ctx, stage / fmt.file, own)
        except EdgekitError as e:
            if not fmt.best_effort:
                raise
            skipped.append(f"{fmt.file} was not written: {e}")
            continue
        cands += [Candidate(fmt, Path(f), how, learned=how.get("ranges") == LEARNED)
                  for f, how in written]
    return cands, skipped


def publish(stage: Path, prep: Prepared, final: list[Candidate], report: dict,
            started: float, shipped: list[Candidate], keep_candidates: bool) -> None:
    """samples.npz, references.npz (with --keep-candidates: edgekit.exporting.ship), then
    manifest.json once (each shipped file's sha256), report.json and report.md."""
    from edgekit import manifest as mf
    from edgekit.macs import macs_entry

    with atomic_path(stage / mf.SAMPLES) as tmp, open(tmp, "wb") as f:
        np.savez(f, x=prep.samples[0], y=prep.samples[1])
    files = {c.fmt.file: manifest_entry(c) for c in final}
    mf.write(stage, {**mf.with_files(prep.manifest, stage, files),
                     **macs_entry(stage),  # the model's MACs per input
                     **ship.record(stage, final, shipped, keep_candidates)})
    report["export_seconds"] = round(time.perf_counter() - started, 2)
    report["export_cpu_seconds"] = round(time.process_time(), 2)  # this process, all threads
    write_json(stage / REPORT, report)
    write_text(stage / REPORT_MD, report_markdown(report))


def _fail_fast(prep: Prepared, cands: list[Candidate], allow_degraded: bool) -> None:
    """A format none of whose candidates passed fails the export, before any timing."""
    failures = [c.check.why for f in prep.formats
                if not any(c.check.passed for c in cands if c.fmt is f)
                for c in cands if c.fmt is f]
    if failures and not allow_degraded:
        raise EdgekitError("export check failed: " + "; ".join(failures)
                           + " (nothing was written)")
