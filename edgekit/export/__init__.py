"""`edgekit export`: write each artifact, verify it against the PyTorch model, then publish.

Everything is written into a staging folder and moved to RUN/export only after every check
passed, so a failed export leaves the previous export (or nothing) in place:

    RUN/export/model.onnx, model.int8.onnx, model.fp16.onnx   ONNX artifacts
    RUN/export/model.ts, model.int8.ts                        TorchScript artifacts
    RUN/export/manifest.json                                  contract + sha256 of each artifact
    RUN/export/samples.npz                                    held-out inputs (predict --sample)
    RUN/export/report.json, report.md                         checks, int8 candidates, timings

Re-exporting rebuilds only the formats asked for: every other file of the previous export
(artifacts, bench.json, anything else) is kept, and the manifest and report describe every
artifact present. An int8 format writes one candidate per layout its target lists
(edgekit.export.targets); for this machine (`--target local`) the candidates are timed and the
fastest one that passes its check becomes model.int8.onnx.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_dir, write_json, write_text
from edgekit.macs import manifest_entry
from edgekit.manifest import make_manifest, with_files
from edgekit.registry import Registry


@dataclass(frozen=True)
class Format:
    """One artifact kind.

    `module` has `write(ctx, path, manifest) -> [(file, layout), ...]`: the file(s) it wrote,
    each with a dict saying how it was made ({} for fp32). One file is the artifact; several
    are candidates export verifies, times and chooses from. `needs` are written first.
    """

    file: str
    format: str
    precision: str
    module: str
    needs: tuple[str, ...] = ()


@dataclass
class ExportContext:
    """What every format's `write` may use."""

    model: Any  # nn.Module in eval mode on CPU
    example: Any  # torch.Tensor (2, ...) to trace with, or (input, state) for a stateful model
    cfg: Any  # the recipe's ExportConfig
    calibration: np.ndarray  # (N, ...) training inputs that set int8 ranges
    stage: Path  # the folder being written; earlier artifacts are there
    target: Any  # edgekit.export.targets.Target
    int8: Any  # edgekit.export.int8.Int8Plan, or None when no int8 format is asked for
    candidates: Path  # scratch folder for candidate files, removed before publishing


@dataclass
class Candidate:
    """A written file of one format, its check and (when timed) its latency."""

    fmt: Format
    path: Path
    layout: dict
    row: dict = field(default_factory=dict)
    kept: bool = False  # from the previous export, not rebuilt

    @property
    def ms(self) -> float | None:
        return self.row.get("latency_ms")


FORMATS: Registry = Registry("export format")
FORMATS.register("onnx")(Format("model.onnx", "onnx", "fp32", "edgekit.export.onnx"))
FORMATS.register("onnx-int8")(
    Format("model.int8.onnx", "onnx", "int8", "edgekit.export.onnx_int8", needs=("onnx",)))
FORMATS.register("onnx-fp16")(
    Format("model.fp16.onnx", "onnx", "fp16", "edgekit.export.onnx_fp16", needs=("onnx",)))
FORMATS.register("torchscript")(
    Format("model.ts", "torchscript", "fp32", "edgekit.export.torchscript"))
FORMATS.register("torchscript-int8")(
    Format("model.int8.ts", "torchscript", "int8", "edgekit.export.torchscript_int8"))

ORDER = ("onnx", "onnx-int8", "onnx-fp16", "torchscript", "torchscript-int8")
REWRITTEN = ("manifest.json", "report.json", "report.md", "samples.npz")  # by every export
TIE = 0.03  # another layout replaces the target's first one only if > 3% faster (noise)


def export(run: str | Path, formats: list[str], *, target: str = "local",
           int8_method: str | None = None, exclude: tuple[str, ...] = (),
           allow_degraded: bool = False, max_int8_drop: float | None = None,
           tune_seconds: float | None = None, machine: dict | None = None) -> dict:
    """Export a trained run and verify each artifact on the held-out split.

    Args:
        run: a run directory written by `edgekit train`.
        formats: names in FORMATS ("onnx", "onnx-int8", "onnx-fp16", "torchscript",
            "torchscript-int8"); only these are rebuilt, other files in RUN/export are kept.
        target: "local" (this machine: int8 layouts timed, fastest kept) or a preset of
            edgekit.export.targets.PRESETS ("x86", "pi4", "pi5", "arm64").
        int8_method: "auto", "static" or "dynamic"; None takes the recipe's export.int8_method.
        exclude: module names (model.named_modules()) to keep in fp32 in int8 artifacts.
        allow_degraded: keep an artifact that fails its check, recorded as failed in the
            report and manifest, instead of failing the export.
        max_int8_drop: accuracy points int8 may lose against PyTorch fp32; None takes the
            recipe's export.max_int8_drop.
        tune_seconds: timing budget per artifact for `local`; None takes the recipe's
            export.tune_seconds; 0 times nothing and keeps the target's first layout.
        machine: edgekit.machine.machine_info() to read `local` from (default: this machine).

    Returns:
        The report (also written as report.json / report.md).

    Raises:
        EdgekitError: unknown or missing formats or target, a missing or damaged run, data
            that no longer match training's, an operator a format cannot export, or an
            artifact that fails its check (unless allow_degraded).
    """
    import torch

    from edgekit.data import build_dataset
    from edgekit.export import targets
    from edgekit.export.int8 import METHODS
    from edgekit.export.onnx import INPUT_NAME
    from edgekit.export.tune import time_artifacts
    from edgekit.tasks import get_task
    from edgekit.train import load_run

    started = time.perf_counter()
    fmts = _ordered(formats)
    tgt = targets.resolve(target, machine)
    if int8_method not in (None, *METHODS):  # checked before any work
        raise EdgekitError(f"--int8-method {int8_method!r}; expected one of: "
                           f"{', '.join(METHODS)}")
    recipe, model, metrics = load_run(run)
    cfg = recipe.export
    thresholds = {"parity_atol": cfg.parity_atol, "fp16_atol": cfg.fp16_atol,
                  "max_int8_drop": cfg.max_int8_drop if max_int8_drop is None else max_int8_drop}
    budget = cfg.tune_seconds if tune_seconds is None else tune_seconds
    plan = _int8_plan(model, fmts, cfg, int8_method, tuple(exclude))
    data = build_dataset(recipe.data)
    if data.fingerprint() != metrics.get("data_fingerprint"):
        raise EdgekitError(
            f"the data built from {str(Path(run) / 'recipe.yaml')!r} differ from those the run "
            "was trained and tested on (split, preprocessing or labels changed); retrain"
        )
    # The contract is what training recorded, not what today's data code would say.
    stateful = getattr(model, "stateful", False)
    manifest = make_manifest(
        recipe=recipe.name, model=recipe.model.name, task=data.task, input_name=INPUT_NAME,
        input_shape=[None, *metrics["input_shape"]], preprocess=metrics["preprocess"],
        labels=metrics["labels"], input_dtype=metrics.get("input_dtype", "float32"),
        state=_state_spec(model) if stateful else None,
    )
    test_x, test_y = data.test.x, data.test.y
    stream = data.test.stream or 256  # a stream's windows in order, its state carried
    reference = reference_outputs(model, test_x, stream)  # (N, ...) PyTorch fp32 outputs
    task = get_task(data.task)
    ref_acc = task.score(reference, test_y)
    pick = np.random.default_rng(recipe.data.split_seed).permutation(len(data.train))
    calibration = data.train.x[pick[:cfg.calibration_samples]]
    # A batch of 2 to trace: with 1, torch.export specializes RNN/LSTM/GRU batches to 1.
    example = torch.from_numpy(np.repeat(data.train.x[:1], 2, axis=0))
    if stateful:
        example = (example, model.initial_state(2))

    out = Path(run) / "export"
    with atomic_dir(out) as stage:
        kept_files = _keep_previous(out, stage, {f.file for f in fmts})
        ctx = ExportContext(model, example, cfg, calibration, stage, tgt, plan,
                            stage / ".candidates")
        ctx.candidates.mkdir()
        cands: list[Candidate] = []
        for fmt in fmts:
            own = {**manifest, "artifact": {"file": fmt.file, "format": fmt.format,
                                            "precision": fmt.precision}}
            written = importlib.import_module(fmt.module).write(ctx, stage / fmt.file, own)
            cands += [Candidate(fmt, Path(f), layout) for f, layout in written]
        by_file = {FORMATS.get(n).file: FORMATS.get(n) for n in FORMATS.names()}
        kept = [Candidate(by_file[f], stage / f, {}, kept=True) for f in kept_files
                if f in by_file]
        for c in cands + kept:
            c.row = verify(c.path, c.fmt, test_x, test_y, reference, ref_acc, thresholds, task,
                           stream)

        failures = [c.row["why"] for fmt in fmts
                    if not any(c.row["passed"] for c in cands if c.fmt is fmt)
                    for c in cands if c.fmt is fmt]
        if failures and not allow_degraded:  # before any timing: fail fast
            raise EdgekitError("export check failed: " + "; ".join(failures)
                               + " (nothing was written)")
        tuning = _tune(tgt, budget, cands + kept, test_x[:1], time_artifacts)
        chosen = [_choose([c for c in cands if c.fmt is fmt]) for fmt in fmts]
        for c in chosen:
            c.row["chosen"] = True
            if c.path != stage / c.fmt.file:
                os.replace(c.path, stage / c.fmt.file)
                c.path = stage / c.fmt.file
        shutil.rmtree(ctx.candidates)

        final = sorted(chosen + kept, key=lambda c: _rank(c.fmt))
        rows = [_artifact_row(c) for c in final]
        report = {
            "run": str(run), "recipe": recipe.name, "model": recipe.model.name,
            "test_samples": len(test_y),
            "task": data.task, "metric": task.metric,
            "pytorch": {"accuracy": ref_acc, task.metric: ref_acc},
            "thresholds": thresholds,
            "onnx_opset": cfg.opset,
            "calibration": {"samples": len(calibration), "method": cfg.calibration_method,
                            "per_channel": cfg.per_channel},
            "target": tgt.to_dict(),
            "int8": plan.to_dict() if plan else None,
            "candidates": [_candidate_row(c) for c in cands if c.fmt.precision == "int8"],
            "tuning": tuning,
            "fastest": _fastest(final),
            "verdict": verdict(final, tgt, tuning),
            "artifacts": rows,
            "rebuilt": [f.file for f in fmts],
            "kept": kept_files,
            "notes": _notes(stage, fmts, kept),
        }
        files = {c.fmt.file: _manifest_entry(c) for c in final}
        write_json(stage / "manifest.json",
                   {**with_files(manifest, stage, files), **manifest_entry(stage)})  # + macs
        _save_samples(stage / "samples.npz", test_x[:cfg.samples], test_y[:cfg.samples])
        report["export_seconds"] = round(time.perf_counter() - started, 2)
        write_json(stage / "report.json", report)
        write_text(stage / "report.md", report_markdown(report))
    return report


def reference_outputs(model, x: np.ndarray, size: int = 256) -> np.ndarray:
    """The PyTorch model's outputs on `x` in batches of `size` (N, ...), float32 numpy.

    A stateful model reads `x` as one stream's windows in order (`size` = its streams),
    carrying its hidden state from batch to batch as the runtime does.
    """
    import torch

    from edgekit.loop import forward

    state = None

    def run(xb: np.ndarray) -> np.ndarray:
        nonlocal state
        out, state = forward(model, torch.from_numpy(xb), state)
        return out.float().numpy()

    with torch.inference_mode():
        return batched(run, x, size)


def verify(path: Path, fmt: Format, x: np.ndarray, y: np.ndarray, reference: np.ndarray,
           ref_acc: float, thresholds: dict, task=None, size: int = 256) -> dict:
    """Run an artifact through edgekit.runtime on the held-out inputs and compare with PyTorch.

    fp32 artifacts must match the PyTorch outputs within `parity_atol`, fp16 within `fp16_atol`
    (both scaled by the outputs' range); int8 artifacts must keep the task's score within
    `max_int8_drop` points of PyTorch fp32 (edgekit.tasks.Task.drop_points: accuracy points, or
    R² points for regression, the MSE change also reported). The task decodes both outputs:
    top-1 agreement for classification, whole decoded sequences for character models. An
    artifact that cannot be loaded or run (an operator the runtime lacks) fails its check with
    the runtime's one-line reason. `size` is the batch (a stateful model's streams: 1).
    """
    from edgekit.runtime import load
    from edgekit.tasks import get_task

    task = task or get_task("classification")
    row = {"file": path.name, "format": fmt.format, "precision": fmt.precision,
           "bytes": path.stat().st_size}
    try:
        runner = load(path)
        outputs = batched(runner.run, x, size)  # the runner carries a stateful model's state
    except EdgekitError as e:
        return {**row, "accuracy": None, "accuracy_drop_points": None,
                "max_abs_diff": None, "top1_agreement": None, "passed": False,
                "why": f"{fmt.format} {fmt.precision}: {e}"}
    artifact = (runner.manifest or {}).get("artifact", {})
    for key in ("target", "quantized_engine"):
        if artifact.get(key):
            row[key] = artifact[key]
    if artifact.get("layout"):
        row["layout"] = artifact["layout"]["name"]
    acc = task.score(outputs, y)
    diff = float(np.abs(outputs - reference).max())
    scale = max(1.0, float(np.abs(reference).max()))
    row.update({
        "accuracy": acc, task.metric: acc,
        "accuracy_drop_points": round(task.drop_points(reference, outputs, y), 4),
        "max_abs_diff": diff,
        "top1_agreement": float((task.decode(outputs) == task.decode(reference)).mean())
        if task.higher_is_better else None,  # regression: no classes to agree on
    })
    if hasattr(task, "sequences_equal"):  # character models: whole decoded strings
        row["sequences_equal"] = task.sequences_equal(outputs, reference)
    if not task.higher_is_better:
        row[f"{task.metric}_change"] = acc - ref_acc
    if fmt.precision in ("fp32", "fp16"):
        atol = thresholds["parity_atol" if fmt.precision == "fp32" else "fp16_atol"] * scale
        row["passed"] = diff <= atol
        row["why"] = f"{path.name} differs from PyTorch by {diff:.3g} (allowed {atol:.3g})"
    else:
        max_drop = thresholds["max_int8_drop"]
        row["passed"] = row["accuracy_drop_points"] <= max_drop
        what = "accuracy points" if task.higher_is_better else (
            f"R² points ({task.metric} {task.format(ref_acc)} -> {task.format(acc)})")
        row["why"] = (f"{path.name} loses {row['accuracy_drop_points']:.2f} {what} "
                      f"against PyTorch fp32 (allowed {max_drop})")
    if row["passed"]:
        row["why"] = ""
    return row


def conversion_error(fmt: str, e: Exception) -> EdgekitError:
    """One line for a model that a format cannot take, naming the operator when known.

    Args:
        fmt: the format, as the user should read it ("onnx (opset 18)", "torchscript").
        e: what torch.onnx / torch.jit / torch.fx raised (their messages run to pages).
    """
    text = str(e)
    op = (re.search(r"op='([\w.]+)', overload='(\w+)'", text)
          or re.search(r"target=torch\.ops\.([\w.]+?)(?:\.default)?\]?\(", text)
          or re.search(r"[Uu]nsupported (?:operator|op|node)[^\w]*([\w:.]+)", text))
    if op:
        return EdgekitError(f"{fmt}: operator {op.group(1)} cannot be exported; keep it out of "
                            "the model or export another format")
    causes = re.findall(r"<class '[\w.]+'>: (.+)", text)
    first = (causes[0] if causes else next((s for s in text.splitlines() if s.strip()), ""))
    return EdgekitError(f"{fmt}: the model cannot be exported: {type(e).__name__}: "
                        f"{' '.join(first.split())[:240]}")


def verdict(artifacts: list[Candidate], target, tuning: dict) -> str:
    """One line: which artifact is fastest here, and whether int8 beat fp32 at all."""
    int8 = [c for c in artifacts if c.fmt.precision == "int8" and not c.kept]
    if not tuning.get("timed"):
        if not int8:
            return ""
        layouts = ", ".join(f"{c.fmt.file} {c.row.get('layout', '')}".strip() for c in int8)
        return (f"int8 for target {target.name}: {layouts}, the target's documented layout; "
                f"not timed ({tuning.get('why', '')})")
    timed = [c for c in artifacts if c.ms is not None]
    fp32 = [c for c in timed if c.fmt.precision == "fp32"]
    fast8 = [c for c in timed if c.fmt.precision == "int8"]
    if fast8 and fp32:
        b8, b32 = min(fast8, key=lambda c: c.ms), min(fp32, key=lambda c: c.ms)
        name8 = f"{b8.fmt.file} ({b8.row.get('layout', 'int8')})"
        if b8.ms < b32.ms:
            return (f"int8 is faster here: {name8} {b8.ms:.3f} ms, {b32.ms / b8.ms:.1f}x "
                    f"{b32.fmt.file} ({b32.ms:.3f} ms)")
        size = b8.row["bytes"] / max(1, _fp32_twin(b8, artifacts))
        return (f"no int8 candidate beat fp32 on this machine: the fastest, {name8}, took "
                f"{b8.ms:.3f} ms against {b32.fmt.file}'s {b32.ms:.3f} ms; deploy "
                f"{b32.fmt.file} for speed (int8 only saves size here: {size:.0%} of fp32)")
    best = min(timed, key=lambda c: c.ms) if timed else None
    return f"fastest here: {best.fmt.file} {best.ms:.3f} ms" if best else ""


def batched(fn, x: np.ndarray, size: int = 256) -> np.ndarray:
    """fn over x in batches of `size`, outputs concatenated: bounded memory on big test sets."""
    return np.concatenate([fn(x[i:i + size]) for i in range(0, len(x), size)])


def report_markdown(report: dict) -> str:
    from edgekit.tasks import get_task

    task = get_task(report.get("task", "classification"))
    fmt = task.format
    lines = [
        f"# Export report: {report['recipe']} ({report['model']})", "",
        f"Held-out samples: {report['test_samples']}; PyTorch fp32 {task.metric} "
        f"{fmt(report['pytorch']['accuracy'])}.", "",
    ]
    target = report.get("target") or {}
    if target:
        lines += [f"Target: {target['name']} ({target['description']}); torch quantized engine "
                  f"{target['quantized_engine']}.", ""]
    if report.get("int8"):
        int8 = report["int8"]
        excl = f"; kept in fp32: {', '.join(int8['exclude'])}" if int8["exclude"] else ""
        lines += [f"int8 method: {int8['why']}{excl}.", ""]
    lines += [
        f"| artifact | format | precision | layout | size KB | {task.metric} | drop (pts) "
        "| max abs diff | top-1 agree | p50 ms | check |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["artifacts"]:
        check = ("pass" if r["passed"] else "DEGRADED" if r.get("degraded") else "FAIL") \
            + (", kept" if r.get("kept") else "")
        lines.append(
            f"| {r['file']} | {r['format']} | {r['precision']} | {r.get('layout', '-')} "
            f"| {r['bytes'] / 1024:.1f} | {_num(r['accuracy'], fmt)} "
            f"| {_num(r['accuracy_drop_points'], '.2f')} | {_num(r['max_abs_diff'], '.2e')} "
            f"| {_num(r['top1_agreement'], '.2%')} | {_ms(r)} | {check} |"
        )
    if report.get("candidates"):
        lines += ["", "int8 candidates:", "",
                  f"| format | layout | size KB | {task.metric} | drop (pts) | p50 ms | check "
                  "| chosen |",
                  "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
        for c in report["candidates"]:
            lines.append(
                f"| {c['format']} | {c['layout']} | {c['bytes'] / 1024:.1f} "
                f"| {_num(c['accuracy'], fmt)} | {_num(c['accuracy_drop_points'], '.2f')} "
                f"| {_ms(c)} "
                f"| {'pass' if c['passed'] else 'FAIL: ' + c['why']} "
                f"| {'yes' if c['chosen'] else ''} |")
    tuning = report.get("tuning") or {}
    if tuning.get("timed"):
        lines += ["", f"Timed on this machine: batch 1, {tuning['threads']} threads, "
                      f"{tuning['rounds']} interleaved rounds, median of round medians; "
                      f"{tuning['seconds']:.1f} s of tuning."]
    if report.get("verdict"):
        lines += ["", f"**{report['verdict']}**"]
    for note in report.get("notes", []):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def _ordered(formats: list[str]) -> list[Format]:
    """The Formats for `formats`, each after the formats it is made from."""
    if not formats:
        raise EdgekitError("nothing to export: pass --onnx and/or --torchscript (with --int8, "
                           "--fp16)")
    for name in formats:
        for need in FORMATS.get(name).needs:
            if need not in formats:
                raise EdgekitError(f"export format {name!r} is made from {need!r}: add it")
    return sorted({FORMATS.get(n) for n in formats}, key=_rank)


def _rank(fmt: Format) -> int:
    """Formats in the order they are written and listed: each after those it is made from."""
    return [FORMATS.get(n) for n in ORDER if n in FORMATS].index(fmt)


def _int8_plan(model, fmts: list[Format], cfg, method: str | None, exclude: tuple[str, ...]):
    from edgekit.export.int8 import Int8Plan, check_exclude, choose_method

    if not any(f.precision == "int8" for f in fmts):
        if exclude:
            raise EdgekitError("--int8-exclude applies to int8 artifacts: add --int8")
        return None
    chosen, why = choose_method(model, method or cfg.int8_method)
    return Int8Plan(chosen, why, check_exclude(model, exclude), cfg.calibration_method,
                    cfg.calibration_samples)


def _keep_previous(old: Path, stage: Path, rebuild: set[str]) -> list[str]:
    """Link the previous export's files into the stage, except those this export rewrites."""
    kept = []
    if not old.is_dir():
        return kept
    for f in sorted(old.iterdir()):
        if f.name in rebuild or f.name in REWRITTEN or f.name.startswith("."):
            continue
        if f.is_dir():
            shutil.copytree(f, stage / f.name, copy_function=_link_or_copy)
        else:
            _link_or_copy(f, stage / f.name)
        kept.append(f.name)
    return kept


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)  # the old folder is removed once the new one is in place
    except OSError:
        shutil.copy2(src, dst)


def _tune(target, budget: float, cands: list[Candidate], x: np.ndarray, time_artifacts) -> dict:
    """Time every artifact and candidate that passed its check, when the target is here."""
    if not target.tune:
        return {"timed": False, "why": f"--target {target.name} is not this machine"}
    if budget <= 0:
        return {"timed": False, "why": "export.tune_seconds is 0"}
    timed = [c for c in cands if c.row["passed"]]
    if not timed:
        return {"timed": False, "why": "no artifact passed its check"}
    threads = os.cpu_count() or 1
    t0 = time.perf_counter()
    times = time_artifacts([c.path for c in timed], x, threads=threads, budget_s=budget)
    for c in timed:
        c.row["latency_ms"] = times[c.path]["ms"]
        c.row["timing"] = times[c.path]
    from edgekit.export.tune import ROUNDS

    return {"timed": True, "threads": threads, "batch": len(x), "rounds": ROUNDS,
            "budget_s_per_artifact": budget, "artifacts": len(timed),
            "seconds": round(time.perf_counter() - t0, 2)}


def _choose(cands: list[Candidate]) -> Candidate:
    """The candidate to publish among those written for one format.

    The fastest passing candidate; the first (the target's documented layout) unless another
    is more than TIE faster or the candidates were not timed. With none passing (only reached
    with allow_degraded), the most accurate one, marked degraded.
    """
    passing = [c for c in cands if c.row["passed"]]
    if passing:
        first = passing[0]
        timed = [c for c in passing if c.ms is not None]
        if first.ms is None or not timed:
            return first
        best = min(timed, key=lambda c: c.ms)
        return first if first.ms <= best.ms * (1 + TIE) else best

    def badness(c):  # None: the artifact did not even run
        return tuple(float("inf") if c.row[k] is None else c.row[k]
                     for k in ("accuracy_drop_points", "max_abs_diff"))

    best = min(cands, key=badness)
    best.row["degraded"] = True
    return best


def _artifact_row(c: Candidate) -> dict:
    row = {k: v for k, v in c.row.items() if k not in ("timing", "chosen")}
    row["file"] = c.fmt.file
    if c.kept:
        row["kept"] = True  # not rebuilt by this export; checked again here
        if not row["passed"]:
            row["degraded"] = True
    return row


def _candidate_row(c: Candidate) -> dict:
    return {"format": c.fmt.format, "artifact": c.fmt.file,
            "layout": c.layout.get("name", ""), "bytes": c.row["bytes"],
            "accuracy": c.row["accuracy"], "accuracy_drop_points": c.row["accuracy_drop_points"],
            "top1_agreement": c.row["top1_agreement"], "passed": c.row["passed"],
            "why": c.row["why"], "latency_ms": c.ms, "timing": c.row.get("timing"),
            "chosen": bool(c.row.get("chosen")), "how": c.layout}


def _manifest_entry(c: Candidate) -> dict:
    entry = {"format": c.fmt.format, "precision": c.fmt.precision}
    for key in ("layout", "target", "quantized_engine"):
        if c.row.get(key):
            entry[key] = c.row[key]
    entry["check"] = "passed" if c.row["passed"] else f"failed: {c.row['why']}"
    return entry


def _fastest(artifacts: list[Candidate]) -> dict | None:
    timed = [c for c in artifacts if c.ms is not None]
    if not timed:
        return None
    best = min(timed, key=lambda c: c.ms)
    return {"file": best.fmt.file, "latency_ms": best.ms}


def _fp32_twin(c: Candidate, artifacts: list[Candidate]) -> int:
    """Size of the fp32 artifact of the same format as `c` (0 if absent)."""
    twin = [a for a in artifacts if a.fmt.format == c.fmt.format and a.fmt.precision == "fp32"]
    return twin[0].row["bytes"] if twin else 0


def _notes(stage: Path, fmts: list[Format], kept: list[Candidate]) -> list[str]:
    notes = []
    for c in kept:
        if not c.row["passed"]:
            notes.append(f"{c.fmt.file} was kept from the previous export (not asked to rebuild) "
                         f"and fails today's check: {c.row['why']}")
    bench = stage / "bench.json"
    if bench.is_file():
        rebuilt = {f.file for f in fmts}
        try:
            import json

            timed = {r.get("file") for r in json.loads(bench.read_text())["results"]}
        except (ValueError, KeyError, TypeError):
            timed = set()
        stale = sorted(timed & rebuilt)
        if stale:
            notes.append(f"bench.json was kept but timed the previous {', '.join(stale)}; run "
                         "`edgekit bench` again")
    return notes


def _state_spec(model) -> dict:
    """The manifest's `state` entry: a stateful model's second input and output."""
    from edgekit.export.onnx import STATE_NAME, STATE_OUT_NAME

    layers, hidden = model.state_shape
    return {"input": STATE_NAME, "output": STATE_OUT_NAME, "shape": [layers, None, hidden]}


def _ms(row: dict) -> str:
    return _num(row.get("latency_ms"), ".3f")


def _num(value, spec) -> str:
    """`value` formatted by a format spec or a function (a task's format); None as "-"."""
    if value is None:
        return "-"
    return spec(value) if callable(spec) else format(value, spec)


def _save_samples(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    from edgekit.fileio import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, x=x, y=y)
