"""Check an artifact against the PyTorch model on the held-out split, through edgekit.runtime.

fp32 artifacts must match the PyTorch outputs within `parity_atol`, fp16 within `fp16_atol`
(both scaled by the outputs' range); int8 artifacts must keep the task's score within
`max_int8_drop` points of PyTorch fp32 (edgekit.tasks.Task.drop_points: accuracy points, or R²
points for regression, the metric's change also reported). A QAT run's int8 artifacts are
compared with its fake-quantized model (what training measured), and must also stay within
`max_int8_drop` of the fp32 run QAT started from. The task decodes both outputs:
top-1 agreement for classification, whole decoded sequences for character models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError

IMAGE_BATCH = 16  # images per PyTorch call in reference_outputs (cache-friendly on CPU)


@dataclass(frozen=True)
class Gate:
    """What an artifact must meet to pass."""

    parity_atol: float  # fp32, times the outputs' range
    fp16_atol: float
    max_int8_drop: float  # points of the task's score

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Heldout:
    """The held-out split and what PyTorch fp32 made of it."""

    x: np.ndarray  # (N, ...) model inputs
    y: np.ndarray  # (N, ...) targets
    reference: np.ndarray  # (N, ...) PyTorch fp32 outputs
    score: float  # the task's metric of `reference`
    task: Any  # edgekit.tasks.Task
    batch: int  # rows per call (a stateful model's streams, in order)
    # A QAT run (edgekit.qat): int8 artifacts reproduce its fake-quantized model, and must
    # also stay within the gate of the fp32 run QAT started from.
    int8_reference: np.ndarray | None = None
    base_score: float | None = None
    # False: no labels (an imported model's unlabeled data): `y` is what fp32 predicts, so
    # the score is agreement with fp32 (tasks.Task.pseudo_targets).
    labeled: bool = True
    against: str = "PyTorch"  # whose fp32 outputs the reference is, as the gate's line says


@dataclass
class Check:
    """One artifact's check, and (once timed) its latency."""

    file: str
    format: str
    precision: str
    bytes: int
    passed: bool
    why: str = ""  # the one-line reason when it failed
    score: float | None = None  # the task's metric; None: the artifact did not run
    drop_points: float | None = None
    max_abs_diff: float | None = None
    top1_agreement: float | None = None  # None for regression: no classes to agree on
    details: dict = field(default_factory=dict)  # layout, target, engine, metric change, ...
    latency_ms: float | None = None
    timing: dict | None = None
    degraded: bool = False  # kept although it failed (--allow-degraded)

    def row(self, metric: str) -> dict:
        """The report's row: the task's metric under its own name and as `score`."""
        row = {"file": self.file, "format": self.format, "precision": self.precision,
               "bytes": self.bytes, "score": self.score, metric: self.score,
               "accuracy_drop_points": self.drop_points, "max_abs_diff": self.max_abs_diff,
               "top1_agreement": self.top1_agreement, **self.details, "passed": self.passed,
               "why": self.why}
        if self.latency_ms is not None:
            row["latency_ms"] = self.latency_ms
        if self.degraded:
            row["degraded"] = True
        return row

    def badness(self) -> tuple[float, float]:
        """For choosing the least bad of failed candidates: drop, then difference."""
        inf = float("inf")
        return (inf if self.drop_points is None else self.drop_points,
                inf if self.max_abs_diff is None else self.max_abs_diff)


def check_artifact(path: Path, fmt, held: Heldout, gate: Gate) -> Check:
    """Run an artifact through edgekit.runtime on the held-out inputs and compare with PyTorch.

    An artifact that cannot be loaded or run (an operator the runtime lacks) fails its check
    with the runtime's one-line reason.

    Args:
        fmt: its edgekit.formats.Format.
    """
    from edgekit.runtime import load

    check = Check(path.name, fmt.format, fmt.precision, path.stat().st_size, passed=False)
    try:
        runner = load(path)
        outputs = batched(runner.run, held.x, held.batch)  # the runner carries any state
    except EdgekitError as e:
        check.why = f"{fmt.format} {fmt.precision}: {e}"
        return check
    artifact = (runner.manifest or {}).get("artifact", {})
    check.details = {k: artifact[k] for k in ("target", "quantized_engine") if artifact.get(k)}
    if artifact.get("layout"):
        check.details["layout"] = artifact["layout"]["name"]
    task, ref = held.task, held.reference
    if fmt.precision == "int8" and held.int8_reference is not None:
        ref = held.int8_reference
    check.score = task.score(outputs, held.y)
    check.drop_points = round(task.drop_points(ref, outputs, held.y), 4)
    check.max_abs_diff = float(np.abs(outputs - ref).max())
    if task.higher_is_better:
        check.top1_agreement = float((task.decode(outputs) == task.decode(ref)).mean())
    else:
        check.details[f"{task.metric}_change"] = check.score - held.score
    if hasattr(task, "sequences_equal"):  # character models: whole decoded strings
        check.details["sequences_equal"] = task.sequences_equal(outputs, ref)
    check.passed, check.why = _gate(check, fmt.precision, held, gate,
                                    max(1.0, float(np.abs(ref).max())))
    return check


def _gate(c: Check, precision: str, held: Heldout, gate: Gate, scale: float) -> tuple[bool, str]:
    if precision in ("fp32", "fp16"):
        atol = (gate.parity_atol if precision == "fp32" else gate.fp16_atol) * scale
        return c.max_abs_diff <= atol, (f"{c.file} differs from {held.against} by "
                                        f"{c.max_abs_diff:.3g} (allowed {atol:.3g})")
    task = held.task
    what = "accuracy points" if task.higher_is_better else (
        f"R² points ({task.metric} {task.format(held.score)} -> {task.format(c.score)})")
    against = f"{held.against} fp32" if held.int8_reference is None \
        else "PyTorch (QAT, int8 simulated)"
    if not held.labeled:
        what = ("points of top-1 agreement" if task.higher_is_better
                else f"percent {task.metric.replace('_', ' ')}")
    if c.drop_points > gate.max_int8_drop:
        return False, (f"{c.file} loses {c.drop_points:.2f} {what} against {against} "
                       f"(allowed {gate.max_int8_drop})")
    if held.base_score is not None and task.higher_is_better:
        base_drop = task.worse_by(held.base_score, c.score)
        if base_drop > gate.max_int8_drop:
            return False, (f"{c.file} loses {base_drop:.2f} {what} against the fp32 run QAT "
                           f"started from (allowed {gate.max_int8_drop})")
    return True, ""


def reference_outputs(model, x: np.ndarray, size: int = 256) -> np.ndarray:
    """The PyTorch model's outputs on `x` in batches of `size` (N, ...), float32 numpy.

    A stateful model reads `x` as one stream's windows in order (`size` = its streams),
    carrying its hidden state from batch to batch as the runtime does.

    Images (N, C, H, W) go in channels-last in batches of at most IMAGE_BATCH: PyTorch's CPU
    convolutions run about a quarter faster so (resnet18 at 224 px: 3.6 -> 2.8 CPU-s for 64
    images); the outputs differ from the contiguous layout's by float rounding only.
    """
    import torch

    from edgekit.loop import forward

    state = None
    images = x.ndim == 4 and x.dtype.kind == "f"
    size = min(size, IMAGE_BATCH) if images else size

    def run(xb: np.ndarray) -> np.ndarray:
        nonlocal state, images
        if images:
            try:
                out, state = forward(model, torch.from_numpy(xb).contiguous(
                    memory_format=torch.channels_last), state)
                return out.float().numpy()
            except RuntimeError:  # a forward that needs contiguous tensors (`x.view(n, -1)`)
                images = False
        out, state = forward(model, torch.from_numpy(xb), state)
        return out.float().numpy()

    with torch.inference_mode():
        return batched(run, x, size)


def batched(fn, x: np.ndarray, size: int = 256) -> np.ndarray:
    """fn over x in batches of `size`, outputs concatenated: bounded memory on big test sets."""
    return np.concatenate([fn(x[i:i + size]) for i in range(0, len(x), size)])
