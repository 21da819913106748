"""`edgekit export`: write each artifact, verify it against the PyTorch model, then publish.

Everything is written into a staging folder and moved to RUN/export only after every check
passed, so a failed export leaves the previous export (or nothing) in place:

    RUN/export/model.onnx, model.int8.onnx, model.ts   the artifacts
    RUN/export/manifest.json                           contract + sha256 of each artifact
    RUN/export/samples.npz                             held-out inputs and labels (predict --sample)
    RUN/export/report.json, report.md                  parity and accuracy of each artifact
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_dir, write_json, write_text
from edgekit.manifest import make_manifest, with_files
from edgekit.registry import Registry


@dataclass(frozen=True)
class Format:
    """One artifact kind. `module` has `write(ctx, path, manifest)`; `needs` are written first."""

    file: str
    format: str
    precision: str
    module: str
    needs: tuple[str, ...] = ()


@dataclass
class ExportContext:
    """What every format's `write` may use."""

    model: Any  # nn.Module in eval mode on CPU
    example: Any  # torch.Tensor (1, ...) to trace with
    cfg: Any  # the recipe's ExportConfig
    calibration: np.ndarray  # (N, ...) training inputs that set int8 ranges
    stage: Path  # the folder being written; earlier artifacts are there


FORMATS: Registry = Registry("export format")
FORMATS.register("onnx")(Format("model.onnx", "onnx", "fp32", "edgekit.export.onnx"))
FORMATS.register("onnx-int8")(
    Format("model.int8.onnx", "onnx", "int8", "edgekit.export.quantize", needs=("onnx",)))
FORMATS.register("torchscript")(
    Format("model.ts", "torchscript", "fp32", "edgekit.export.torchscript"))


def export(run: str | Path, formats: list[str], max_int8_drop: float | None = None) -> dict:
    """Export a trained run and verify each artifact on the held-out split.

    Args:
        run: a run directory written by `edgekit train`.
        formats: names in FORMATS ("onnx", "onnx-int8", "torchscript").
        max_int8_drop: accuracy points int8 may lose against PyTorch fp32; None takes the
            recipe's export.max_int8_drop.

    Returns:
        The report (also written as report.json / report.md).

    Raises:
        EdgekitError: unknown or missing formats, a missing or damaged run, data that no
            longer match training's, or an artifact that fails its check.
    """
    import torch

    from edgekit.data import build_dataset
    from edgekit.export.onnx import INPUT_NAME
    from edgekit.tasks import get_task
    from edgekit.train import load_run

    if not formats:
        raise EdgekitError("nothing to export: pass --onnx, --int8 and/or --torchscript")
    for name in formats:
        for need in FORMATS.get(name).needs:
            if need not in formats:
                raise EdgekitError(f"export format {name!r} is made from {need!r}: add it")
    recipe, model, metrics = load_run(run)
    cfg = recipe.export
    max_drop = cfg.max_int8_drop if max_int8_drop is None else max_int8_drop
    data = build_dataset(recipe.data)
    if data.fingerprint() != metrics.get("data_fingerprint"):
        raise EdgekitError(
            f"the data built from {str(Path(run) / 'recipe.yaml')!r} differ from those the run "
            "was trained and tested on (split, preprocessing or labels changed); retrain"
        )
    # The contract is what training recorded, not what today's data code would say.
    manifest = make_manifest(
        recipe=recipe.name, model=recipe.model.name, task=data.task, input_name=INPUT_NAME,
        input_shape=[None, *metrics["input_shape"]], preprocess=metrics["preprocess"],
        labels=metrics["labels"],
    )
    test_x, test_y = data.test.x, data.test.y
    with torch.inference_mode():  # (N, K) PyTorch fp32 logits
        reference = batched(lambda xb: model(torch.from_numpy(xb)).numpy(), test_x)
    task = get_task(data.task)
    ref_acc = task.score(reference, test_y)
    pick = np.random.default_rng(recipe.data.split_seed).permutation(len(data.train))
    calibration = data.train.x[pick[:cfg.calibration_samples]]

    fmts: list[Format] = []  # each after the formats it is made from

    def add(name: str) -> None:
        fmt = FORMATS.get(name)
        for need in fmt.needs:
            add(need)
        if fmt not in fmts:
            fmts.append(fmt)

    for name in formats:
        add(name)
    with atomic_dir(Path(run) / "export") as stage:
        ctx = ExportContext(model, torch.from_numpy(data.train.x[:1]), cfg, calibration, stage)
        for fmt in fmts:
            own = {**manifest, "artifact": {"file": fmt.file, "format": fmt.format,
                                            "precision": fmt.precision}}
            importlib.import_module(fmt.module).write(ctx, stage / fmt.file, own)

        rows = [verify(stage / fmt.file, fmt, test_x, test_y, reference, ref_acc,
                       cfg.parity_atol, max_drop, task) for fmt in fmts]
        report = {
            "run": str(run), "recipe": recipe.name, "model": recipe.model.name,
            "test_samples": len(test_y),
            "pytorch": {"accuracy": ref_acc},
            "thresholds": {"parity_atol": cfg.parity_atol, "max_int8_drop": max_drop},
            "onnx_opset": cfg.opset,
            "calibration": {"samples": len(calibration), "method": cfg.calibration_method,
                            "per_channel": cfg.per_channel},
            "artifacts": rows,
        }
        failed = [r for r in rows if not r["passed"]]
        if failed:
            raise EdgekitError("export check failed: " + "; ".join(r["why"] for r in failed)
                               + " (nothing was written)")
        files = {f.file: {"format": f.format, "precision": f.precision} for f in fmts}
        write_json(stage / "manifest.json", with_files(manifest, stage, files))
        _save_samples(stage / "samples.npz", test_x[:cfg.samples], test_y[:cfg.samples])
        write_json(stage / "report.json", report)
        write_text(stage / "report.md", report_markdown(report))
    return report


def verify(path: Path, fmt: Format, x: np.ndarray, y: np.ndarray, reference: np.ndarray,
           ref_acc: float, atol: float, max_drop: float, task=None) -> dict:
    """Run an artifact through edgekit.runtime on the held-out inputs and compare with PyTorch.

    fp32 artifacts must match the PyTorch logits within `atol` (scaled by the logits' range);
    int8 artifacts must keep the task's metric (accuracy) within `max_drop` points of PyTorch
    fp32. `task` (edgekit.tasks; classification when None) scores and decodes the outputs.
    """
    from edgekit.runtime import load
    from edgekit.tasks import get_task

    task = task or get_task("classification")
    outputs = batched(load(path).run, x)
    acc = task.score(outputs, y)
    diff = float(np.abs(outputs - reference).max())
    scale = max(1.0, float(np.abs(reference).max()))
    row = {
        "file": path.name, "format": fmt.format, "precision": fmt.precision,
        "bytes": path.stat().st_size,
        "accuracy": acc, "accuracy_drop_points": round(task.worse_by(ref_acc, acc), 4),
        "max_abs_diff": diff,
        "top1_agreement": float((task.decode(outputs) == task.decode(reference)).mean()),
    }
    if fmt.precision == "fp32":
        row["passed"] = diff <= atol * scale
        row["why"] = f"{path.name} differs from PyTorch by {diff:.3g} (allowed {atol * scale:.3g})"
    else:
        row["passed"] = row["accuracy_drop_points"] <= max_drop
        row["why"] = (f"{path.name} loses {row['accuracy_drop_points']:.2f} accuracy points "
                      f"against PyTorch fp32 (allowed {max_drop})")
    if row["passed"]:
        row["why"] = ""
    return row


def batched(fn, x: np.ndarray, size: int = 256) -> np.ndarray:
    """fn over x in batches of `size`, outputs concatenated: bounded memory on big test sets."""
    return np.concatenate([fn(x[i:i + size]) for i in range(0, len(x), size)])


def report_markdown(report: dict) -> str:
    lines = [
        f"# Export report: {report['recipe']} ({report['model']})", "",
        f"Held-out samples: {report['test_samples']}; PyTorch fp32 accuracy "
        f"{report['pytorch']['accuracy']:.2%}.", "",
        "| artifact | format | precision | size KB | accuracy | drop (pts) | max abs diff "
        "| top-1 agree | check |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["artifacts"]:
        lines.append(
            f"| {r['file']} | {r['format']} | {r['precision']} | {r['bytes'] / 1024:.1f} "
            f"| {r['accuracy']:.2%} | {r['accuracy_drop_points']:.2f} | {r['max_abs_diff']:.2e} "
            f"| {r['top1_agreement']:.2%} | {'pass' if r['passed'] else 'FAIL'} |"
        )
    return "\n".join(lines) + "\n"


def _save_samples(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    from edgekit.fileio import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, x=x, y=y)
