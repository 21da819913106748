"""PyTorch -> int8 TorchScript with torch.ao.quantization, for the target's quantized engine.

Conv nets: FX graph mode post-training static quantization (observers calibrated on training
inputs, Conv/BN/ReLU fused). Linear/LSTM/GRU models: dynamic quantization (int8 weights,
activation ranges measured at run time). The result is traced (scripted if tracing fails),
frozen and saved with the manifest as an extra file, like model.ts.

The engine decides the kernels and the observers' ranges: "qnnpack" for ARM (what a Pi's torch
runs; no x86-only ops), "x86" (fbgemm + oneDNN, activations in 7 bits because fbgemm's
VPMADDUBSW can saturate) for x86. The runtime sets the engine recorded in the manifest before
loading. torch.ao.quantization is deprecated upstream in favour of torchao's PT2E flow; it is
kept in this one module so that it can be replaced without touching the rest.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.exporting.formats.torchscript import export_torchscript
from edgekit.exporting.int8 import observers


def engine_for(target) -> str:
    """The torch quantized engine for a target: x86 (fbgemm + oneDNN) on x86-64, else qnnpack
    (ARM, and anything else: it has no x86-only ops)."""
    return "x86" if target.arch == "x86_64" else "qnnpack"


def write(ctx, path: Path, manifest: dict) -> list[tuple[Path, dict]]:
    """Format hook for edgekit.exporting: int8 TorchScript of ctx.model for ctx.target's engine."""
    engine, plan = engine_for(ctx.target), ctx.int8
    with quantized_engine(engine):
        if plan.method == "static":
            model, observer = quantize_static_fx(ctx.model, ctx.example, ctx.calibration,
                                                 engine, plan.calibration_method,
                                                 plan.fp32_modules, getattr(ctx, "memo", None))
        else:
            model, observer = quantize_dynamic(ctx.model, plan.fp32_modules), "dynamic (run time)"
        layout = {"name": f"torch.ao-{plan.method}-{engine}" + plan.layout_suffix(),
                  "method": plan.method, "quantized_engine": engine, "observer": observer,
                  "excluded_modules": list(plan.fp32_modules),
                  "fp32_modules": list(plan.fallback_fp32)}
        own = {**manifest, "artifact": {**manifest["artifact"], "layout": layout,
                                        "quantized_engine": engine, "target": ctx.target.name}}
        export_torchscript(model, ctx.example, path, own, what=f"torchscript-int8 ({engine})")
    return [(path, layout)]


@contextmanager
def quantized_engine(engine: str):
    """Use torch's quantized `engine` inside the block: it picks kernels and packs weights."""
    import torch

    supported = torch.backends.quantized.supported_engines
    if engine not in supported:
        raise EdgekitError(f"torchscript-int8: quantized engine {engine!r} is not in this torch "
                           f"build (it has {', '.join(supported)}); choose another --target")
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


def quantize_static_fx(model, example, calibration, engine: str, method: str,
                       exclude: tuple[str, ...] = (), memo: dict | None = None):
    """FX post-training static quantization of `model` calibrated on `calibration` (N, ...).

    Args:
        method: "minmax" uses MinMaxObserver for activations; "entropy" and "percentile" use
            torch's HistogramObserver (it minimizes the quantization error over a histogram,
            torch.ao's closest to both).
        exclude: module names kept in fp32.
        memo: what the calls of one export share (ExportContext.memo): calibrated observers
            a later call with other modules kept fp32 copies (edgekit.exporting.int8.observers).

    Returns:
        (quantized GraphModule, the activation observer used).

    Raises:
        EdgekitError: the model cannot be traced by torch.fx (the reason named).
    """
    from torch.ao.quantization.quantize_fx import convert_fx

    prepared, observer = observe_fx(model, example, calibration, engine, method, exclude, memo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(prepared).eval(), observer


def observe_fx(model, example, calibration, engine: str, method: str,
               exclude: tuple[str, ...] = (), memo: dict | None = None):
    """The FX-prepared copy of `model` (modules fused, observers inserted) calibrated on
    `calibration`: fp32 still, with the converted model's module names. With `memo` (one
    export's shared results), observers an earlier call calibrated on the same inputs are
    copied instead of calibrating again (edgekit.exporting.int8.observers).

    Returns:
        (the observed GraphModule, the activation observer's name).

    Raises:
        EdgekitError: the model cannot be traced by torch.fx (the reason named).
    """
    import torch
    from torch.ao.quantization import MinMaxObserver, QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    from edgekit.exporting.formats.conversion import conversion_error

    mapping = get_default_qconfig_mapping(engine)
    default = mapping.global_qconfig
    observer = "HistogramObserver"
    if method == "minmax":
        # Same dtype and range reduction as the engine's default, min/max instead of histogram.
        reduce = bool(default.activation.p.keywords.get("reduce_range", False))
        mapping.set_global(QConfig(
            activation=MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=reduce),
            weight=default.weight))
        observer = "MinMaxObserver"
    for name in exclude:
        mapping.set_module_name(name, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation and observer notices
        try:
            prepared = prepare_fx(copy.deepcopy(model).eval(), mapping, (example,))
        except Exception as e:  # torch.fx TraceError, unsupported modules
            raise conversion_error(f"torchscript-int8 (torch.ao FX, {engine})", e) from None
        states = {} if memo is None else memo.setdefault(("fx-observers", engine, method), {})
        if not observers.restore(prepared, states):
            with torch.inference_mode():
                for i in range(0, len(calibration), 32):
                    prepared(torch.from_numpy(calibration[i:i + 32]))
            states.update(observers.saved(prepared))
        return prepared, observer


def quantize_dynamic(model, exclude: tuple[str, ...] = ()):
    """int8 weights for Linear/LSTM/GRU (and their cells); activations quantized at run time."""
    import torch
    from torch import nn
    from torch.ao.quantization import default_dynamic_qconfig
    from torch.ao.quantization import quantize_dynamic as ao_quantize_dynamic

    spec: dict = {t: default_dynamic_qconfig
                  for t in (nn.Linear, nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell, nn.RNNCell)}
    spec.update({name: None for name in exclude})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice
        return ao_quantize_dynamic(copy.deepcopy(model).eval(), spec, dtype=torch.qint8)
