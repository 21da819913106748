"""Export's first stage: everything the formats are written and checked from.

The trained model, the data it was trained on (checked unchanged), the held-out split with
PyTorch's own outputs, the calibration inputs, the example batch to trace, the manifest every
artifact embeds, the target and the int8 plan.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.exporting.check import Gate, Heldout, batched
from edgekit.rundir import RunDir

# What export asks of PyTorch's runtime, set before torch loads (`edgekit export` imports it
# later); a value the caller set is kept, and a caller that already used torch keeps its own.
# THP_MEM_ALLOC_ENABLE: PyTorch's CPU allocator asks for transparent huge pages (2 MB) for
# tensors of 2 MB and more (read at torch's first allocation). An export allocates and frees
# activations of hundreds of MB again and again, each 4 KB page a fault when first touched:
# resnet18 at 224 px, PyTorch on the 360 held-out images, 3.4 M page faults and 8.0 s of
# system time, 84 k and 4.2 s with huge pages (the kernel's THP must be madvise or always).
# OMP_WAIT_POLICY=PASSIVE: OpenMP's idle threads (PyTorch's intra-op pool) sleep at once
# instead of spinning for a few ms after every parallel region (read when torch loads OpenMP).
# Much of an export is Python between small torch ops (PT2E's HistogramObservers, the SQNR
# passes), where the spinning thread burns a core doing nothing: resnet18's PT2E calibration
# (256 images at 224 px) took 34.6 CPU-s spinning and 26.8 passive, on a shared machine.
HUGE_PAGES, OPENMP_WAIT = "THP_MEM_ALLOC_ENABLE", "OMP_WAIT_POLICY"
TORCH_ENV = {HUGE_PAGES: "1", OPENMP_WAIT: "PASSIVE"}


@dataclass
class Options:
    """What the user chose (the CLI's flags); None takes the recipe's value."""

    target: str = "local"
    int8_method: str | None = None
    exclude: tuple[str, ...] = ()
    allow_degraded: bool = False
    max_int8_drop: float | None = None
    tune_seconds: float | None = None
    machine: dict | None = None
    int8_fallback: bool = True  # edgekit.exporting.int8.mixed when int8 ONNX fails its gate
    keep_candidates: bool = False  # ship every passing int8 candidate (edgekit.exporting.ship)


@dataclass
class Prepared:
    run: Path
    recipe: Any  # edgekit.recipe.Recipe
    cfg: Any  # the recipe's ExportConfig
    model: Any  # nn.Module in eval mode on CPU
    formats: list  # edgekit.formats.Format, in catalog order
    task_name: str
    manifest: dict  # embedded in every artifact (each adds its own "artifact" entry)
    held: Heldout
    gate: Gate
    calibration: np.ndarray  # (N, ...) training inputs that set int8 ranges
    example: Any  # torch.Tensor (2, ...) to trace with, or (input, state) for a stateful model
    target: Any  # edgekit.exporting.int8.targets.Target
    plan: Any  # edgekit.exporting.int8.plan.Int8Plan, or None without int8 formats
    budget: float  # timing seconds per artifact for a local target
    samples: tuple[np.ndarray, np.ndarray]  # held-out (x, y) shipped as samples.npz
    qat: Any = None  # a QAT run's fake-quantized model (edgekit.qat), for static int8
    held_images: Any = None  # the held-out split's PIL images (image datasets), else None
    fast: dict | None = None  # the fast image path's verdict (edgekit.exporting.fastpath)
    source: Path | None = None  # an imported ONNX file, when `model` is None


def before_torch() -> None:
    """Set each of TORCH_ENV the environment does not set already."""
    for name, value in TORCH_ENV.items():
        os.environ.setdefault(name, value)


def prepare(run: str | Path, fmts: list, opts: Options) -> Prepared:
    """Load the run and build what every stage after it needs.

    Raises:
        EdgekitError: a bad option, a missing or damaged run, or data that no longer match
            the ones the run was trained and tested on.
    """
    from edgekit.data import build_dataset
    from edgekit.exporting.check import reference_outputs
    from edgekit.exporting.int8 import targets
    from edgekit.int8_method import METHODS
    from edgekit.tasks import get_task
    from edgekit.training import load_run

    tgt = targets.resolve(opts.target, opts.machine)
    if opts.keep_candidates:  # the device chooses: give it the layouts worth timing there
        from edgekit.exporting.ship import widen

        tgt = widen(tgt)
    if opts.int8_method not in (None, *METHODS):  # checked before any work
        raise EdgekitError(f"--int8-method {opts.int8_method!r}; expected one of: "
                           f"{', '.join(METHODS)}")
    recipe, model, metrics = load_run(run)  # model None: an imported ONNX file, no torch
    if model is None:
        _onnx_only(run, fmts)
    cfg = recipe.export
    if recipe.data.name == "noise" and any(f.precision == "int8" for f in fmts):
        raise EdgekitError(f"int8 needs real inputs to calibrate and check on: {str(run)!r} was "
                           "imported without --data (ranges calibrated on noise are how int8 "
                           "silently breaks); import again with --data DIR, or export fp32 only")
    plan = _int8_plan(model if model is not None else RunDir(run).onnx_source, fmts, cfg,
                      opts.int8_method, tuple(opts.exclude))
    data = build_dataset(recipe.data)
    if data.fingerprint() != metrics.get("data_fingerprint"):
        raise EdgekitError(
            f"the data built from {str(RunDir(run).recipe)!r} differ from those the run "
            "was trained and tested on (split, preprocessing or labels changed); retrain")
    task = get_task(metrics["task"])
    batch = data.test.stream or 256  # a stream's windows in order, its state carried
    held = _heldout(run, model, metrics, data, task, batch)
    gate = Gate(cfg.parity_atol, cfg.fp16_atol,
                cfg.max_int8_drop if opts.max_int8_drop is None else opts.max_int8_drop)
    pick = np.random.default_rng(recipe.data.split_seed).permutation(len(data.train))
    # A batch of 2 to trace: with 1, torch.export specializes RNN/LSTM/GRU batches to 1.
    example = None
    if model is not None:
        import torch

        example = torch.from_numpy(np.repeat(data.train.x[:1], 2, axis=0))
    if getattr(model, "stateful", False):
        example = (example, model.initial_state(2))
    fake_quant = None  # a QAT run's int8 artifacts take the ranges it learned
    if recipe.qat.epochs and plan is not None and plan.method == "static" and not plan.exclude:
        from edgekit import qat

        fake_quant = qat.load(run, model, example)
        held.int8_reference = reference_outputs(fake_quant, data.test.x, batch)
        held.base_score = metrics.get("qat", {}).get(f"base_test_{task.metric}")
    prep = Prepared(
        Path(run), recipe, cfg, model, fmts, metrics["task"],
        _manifest(recipe, model, metrics, data),
        held, gate, data.train.x[pick[:cfg.calibration_samples]], example, tgt, plan,
        cfg.tune_seconds if opts.tune_seconds is None else opts.tune_seconds,
        (data.test.x[:cfg.samples], held.y[:cfg.samples]), fake_quant,
        getattr(data.test, "images", None),
        source=RunDir(run).onnx_source if model is None else None)
    from edgekit.exporting import fastpath

    prep.fast = fastpath.apply(prep)  # before any artifact embeds the manifest
    return prep


def _heldout(run, model, metrics: dict, data, task, batch: int) -> Heldout:
    """The held-out split with the fp32 reference: PyTorch's outputs, or onnxruntime's on an
    imported ONNX file. Unlabeled data (an imported model's, and raw outputs) are scored
    against fp32 itself (tasks.Task.pseudo_targets)."""
    from edgekit.exporting.check import reference_outputs

    if model is None:
        from edgekit.onnxsource import OnnxSource

        source = OnnxSource(RunDir(run).onnx_source, metrics["input_shape"])
        reference = batched(lambda xb: next(iter(source.run(xb).values())), data.test.x, batch)
    else:
        reference = reference_outputs(model, data.test.x, batch)  # (N, ...) PyTorch fp32
    labeled = metrics.get("labeled", True) and metrics["task"] != "raw"
    y = data.test.y if labeled else task.pseudo_targets(reference)
    held = Heldout(data.test.x, y, reference, task.score(reference, y), task, batch,
                   labeled=labeled)
    if model is None:
        held.against = "the imported ONNX in onnxruntime"
    return held


def _manifest(recipe, model, metrics: dict, data) -> dict:
    """The contract is what training recorded, not what today's data code would say."""
    from edgekit.manifest import make_manifest
    from edgekit.onnxsource import INPUT as INPUT_NAME

    return make_manifest(
        recipe=recipe.name, model=recipe.model.name, task=metrics["task"], input_name=INPUT_NAME,
        input_shape=[None, *metrics["input_shape"]], preprocess=metrics["preprocess"],
        labels=metrics["labels"], input_dtype=metrics.get("input_dtype", "float32"),
        state=_state_spec(model) if getattr(model, "stateful", False) else None,
        outputs=metrics.get("outputs"))


def _onnx_only(run, fmts: list) -> None:
    """A run imported from an ONNX file has no PyTorch model for the other formats."""
    other = [f for f in fmts if f.format != "onnx"]
    if other:
        raise EdgekitError(f"--{other[0].format} needs a PyTorch source; {str(run)!r} was "
                           "imported from an ONNX file: export it with --onnx (and --int8)")


def _state_spec(model) -> dict:
    """The manifest's `state` entry: a stateful model's second input and output."""
    from edgekit.exporting.formats.onnx import STATE_NAME, STATE_OUT_NAME

    layers, hidden = model.state_shape
    return {"input": STATE_NAME, "output": STATE_OUT_NAME, "shape": [layers, None, hidden]}


def _int8_plan(model, fmts: list, cfg, method: str | None, exclude: tuple[str, ...]):
    from edgekit.exporting.int8.plan import Int8Plan, check_exclude
    from edgekit.int8_method import choose_method

    if not any(f.precision == "int8" for f in fmts):
        if exclude:
            raise EdgekitError("--int8-exclude applies to int8 artifacts: add --int8")
        return None
    chosen, why = choose_method(model, method or cfg.int8_method)
    return Int8Plan(chosen, why, check_exclude(model, exclude), cfg.calibration_method,
                    cfg.calibration_samples)
