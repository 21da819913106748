"""`edgekit export`: write each artifact, verify it against the PyTorch model, then publish.

Everything is written into a staging folder and moved to RUN/export only after every check
passed, so a failed export leaves the previous export (or nothing) in place:

    RUN/export/model.onnx, model.int8.onnx, model.ts   the artifacts
    RUN/export/manifest.json                           contract + sha256 of each artifact
    RUN/export/samples.npz                             held-out inputs and labels (predict --sample)
    RUN/export/report.json, report.md                  parity and accuracy of each artifact
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_dir, write_json, write_text
from edgekit.manifest import make_manifest, with_files

# file name -> (format, precision)
ARTIFACTS = {
    "model.onnx": ("onnx", "fp32"),
    "model.int8.onnx": ("onnx", "int8"),
    "model.ts": ("torchscript", "fp32"),
}


def export(run: str | Path, *, onnx: bool = True, torchscript: bool = True, int8: bool = True,
           max_int8_drop: float | None = None) -> dict:
    """Export a trained run and verify each artifact on the held-out split.

    Args:
        run: a run directory written by `edgekit train`.
        onnx, torchscript: which fp32 formats to write.
        int8: also write a static int8 ONNX model (needs onnx=True).
        max_int8_drop: accuracy points int8 may lose against PyTorch fp32; None takes the
            recipe's export.max_int8_drop.

    Returns:
        The report (also written as report.json / report.md).

    Raises:
        EdgekitError: bad flags, a missing run, or an artifact that fails its check.
    """
    import torch

    from edgekit.data import build_dataset
    from edgekit.export.onnx import INPUT_NAME, export_onnx
    from edgekit.export.quantize import quantize_onnx
    from edgekit.export.torchscript import export_torchscript
    from edgekit.train import load_run

    if int8 and not onnx:
        raise EdgekitError("--int8 quantizes the ONNX model: add --onnx")
    if not (onnx or torchscript):
        raise EdgekitError("nothing to export: pass --onnx and/or --torchscript")
    recipe, model, _ = load_run(run)
    cfg = recipe.export
    max_drop = cfg.max_int8_drop if max_int8_drop is None else max_int8_drop
    data = build_dataset(recipe.data)
    manifest = make_manifest(
        recipe=recipe.name, model=recipe.model.name, task=data.task, input_name=INPUT_NAME,
        input_shape=[None, *data.input_shape], preprocess=data.preprocess, labels=data.labels,
    )
    test_x, test_y = data.test.x, data.test.y
    with torch.inference_mode():  # (N, K) PyTorch fp32 logits
        reference = batched(lambda xb: model(torch.from_numpy(xb)).numpy(), test_x)
    ref_acc = float((reference.argmax(1) == test_y).mean())
    example = torch.from_numpy(data.train.x[:1])

    run = Path(run)
    with atomic_dir(run / "export") as stage:
        written = []
        if onnx:
            written.append(export_onnx(model, example, stage / "model.onnx", cfg.opset, manifest))
        if int8:
            rng = np.random.default_rng(recipe.data.split_seed)
            pick = rng.permutation(len(data.train))[:cfg.calibration_samples]
            written.append(quantize_onnx(
                stage / "model.onnx", stage / "model.int8.onnx", data.train.x[pick],
                cfg.calibration_method, cfg.per_channel, manifest,
            ))
        if torchscript:
            written.append(export_torchscript(model, example, stage / "model.ts", manifest))

        rows = [verify(p, test_x, test_y, reference, ref_acc, cfg.parity_atol, max_drop)
                for p in written]
        report = {
            "run": str(run), "recipe": recipe.name, "model": recipe.model.name,
            "test_samples": len(test_y),
            "pytorch": {"accuracy": ref_acc},
            "thresholds": {"parity_atol": cfg.parity_atol, "max_int8_drop": max_drop},
            "calibration": {"samples": min(cfg.calibration_samples, len(data.train)),
                            "method": cfg.calibration_method, "per_channel": cfg.per_channel},
            "artifacts": rows,
        }
        failed = [r for r in rows if not r["passed"]]
        if failed:
            raise EdgekitError("export check failed: " + "; ".join(r["why"] for r in failed)
                               + " (nothing was written)")
        files = {p.name: dict(zip(("format", "precision"), ARTIFACTS[p.name], strict=True))
                 for p in written}
        write_json(stage / "manifest.json", with_files(manifest, stage, files))
        _save_samples(stage / "samples.npz", test_x[:cfg.samples], test_y[:cfg.samples])
        write_json(stage / "report.json", report)
        write_text(stage / "report.md", report_markdown(report))
    return report


def verify(path: Path, x: np.ndarray, y: np.ndarray, reference: np.ndarray, ref_acc: float,
           atol: float, max_drop: float) -> dict:
    """Run an artifact through edgekit.runtime on the held-out inputs and compare with PyTorch.

    fp32 artifacts must match the PyTorch logits within `atol` (scaled by the logits' range);
    int8 artifacts must keep accuracy within `max_drop` points of PyTorch fp32.
    """
    from edgekit.runtime import load

    fmt, precision = ARTIFACTS[path.name]
    outputs = batched(load(path).run, x)
    acc = float((outputs.argmax(1) == y).mean())
    diff = float(np.abs(outputs - reference).max())
    scale = max(1.0, float(np.abs(reference).max()))
    row = {
        "file": path.name, "format": fmt, "precision": precision, "bytes": path.stat().st_size,
        "accuracy": acc, "accuracy_drop_points": round((ref_acc - acc) * 100, 4),
        "max_abs_diff": diff,
        "top1_agreement": float((outputs.argmax(1) == reference.argmax(1)).mean()),
    }
    if precision == "fp32":
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
