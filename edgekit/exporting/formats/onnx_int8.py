"""ONNX fp32 -> int8 with onnxruntime.quantization, one file per layout the target lists.

Static (QDQ or QOperator, calibrated on training inputs) for conv nets, dynamic for models made
of Linear/RNN layers (see edgekit.exporting.int8.plan). The target (edgekit.exporting.int8.targets)
lists the
layouts: a preset names one, `local` several, and export keeps the fastest that passes its check.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.exporting.formats.onnx import INPUT_NAME, check, embed


class ArrayReader:
    """onnxruntime CalibrationDataReader over an array of model inputs (N, ...)."""

    def __init__(self, x: np.ndarray, batch_size: int = 32):
        self._batches = iter(
            [{INPUT_NAME: x[i:i + batch_size]} for i in range(0, len(x), batch_size)]
        )

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def write(ctx, path: Path, manifest: dict) -> list[tuple[Path, dict]]:
    """Format hook for edgekit.exporting: int8 models of the fp32 model.onnx in ctx.stage.

    Returns:
        (file, layout) for each layout of the target, written in ctx.candidates; export
        verifies them, times them when the target is this machine, and moves one to `path`.
    """
    from dataclasses import replace

    from onnxruntime.quantization import quant_pre_process

    if getattr(ctx, "qat", None) is not None:  # a QAT run: the ranges it learned
        from edgekit.exporting.int8.qat import onnx_candidates

        return onnx_candidates(ctx, manifest)
    layouts = ctx.target.schemes(ctx.int8.method)
    if not ctx.cfg.per_channel:  # the recipe asks for per-tensor weights
        layouts = tuple(dict.fromkeys(replace(x, per_channel=False) for x in layouts))
    fp32 = ctx.stage / "model.onnx"
    # Shape inference and graph fusion first, so quantization sees the final graph.
    prepped = ctx.candidates / "model.pre.onnx"
    quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
    exclude = nodes_of(prepped, ctx.int8.exclude)
    cache = ctx.candidates / "calibration.json"  # ranges measured once, shared by the layouts
    out = []
    for layout in layouts:
        file = ctx.candidates / f"model.int8.{layout.name}.onnx"
        info = {**layout.to_dict(), "excluded_nodes": exclude}
        own = {**manifest, "artifact": {**manifest["artifact"], "layout": info,
                                        "target": ctx.target.name}}
        quantize_onnx(prepped, file, layout, ctx.calibration, ctx.int8.calibration_method,
                      exclude, own, cache)
        out.append((file, info))
    prepped.unlink()
    return out


def quantize_onnx(fp32: Path, out: Path, layout, calibration: np.ndarray, method: str,
                  exclude: list[str], manifest: dict, cache: Path | None = None) -> Path:
    """Write the int8 model of `fp32` in `layout` to `out`, with `manifest` embedded.

    Args:
        fp32: a pre-processed fp32 model (onnxruntime.quantization.quant_pre_process).
        layout: an edgekit.exporting.int8.scheme.Scheme, translated here into onnxruntime's options.
        calibration: model inputs (N, ...) float32 that set the activation ranges (static).
        method: calibration method, "minmax", "entropy" or "percentile".
        exclude: node names to leave in fp32.
        cache: a file where the first static layout saves the ranges and later ones read them
            (onnxruntime >= 1.32; older versions calibrate again).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    common = dict(per_channel=layout.per_channel, reduce_range=layout.reduce_range,
                  weight_type=types[layout.weights], nodes_to_exclude=list(exclude),
                  extra_options={"WeightSymmetric": layout.symmetric})
    if layout.mode == "dynamic":
        quantize_dynamic(str(fp32), str(out), **common)
    else:
        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}
        if cache is not None and "calibration_cache_path" in inspect.signature(
                quantize_static).parameters:
            common["calibration_cache_path"] = str(cache)
        quantize_static(
            str(fp32), str(out), ArrayReader(calibration.astype(np.float32)),
            quant_format={"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[
                layout.form],
            activation_type=types[layout.activations], calibrate_method=methods[method],
            **common,
        )
    proto = onnx.load(str(out))
    keep_fp32(proto, exclude)
    embed(proto, manifest)
    check(proto)
    onnx.save(proto, str(out))
    return out


def keep_fp32(proto, exclude: list[str]) -> None:
    """Keep each excluded node fp32 at run time: read its DequantizeLinear input through Max(x, x).

    quantize_static leaves an excluded Conv/Gemm with fp32 weights, but when its input comes
    from a DequantizeLinear, onnxruntime's graph optimizer (WeightBiasQuantization, at every
    level above "disable all") quantizes its weights per tensor at session start: the layer
    the user kept fp32 ran int8 after all. Max(x, x) is x, and no onnxruntime rewrite removes
    it before that pass (Identity, Mul by 1 and Add 0 are removed first: measured, ORT 1.31).
    The fp32 tensor before the QuantizeLinear is no substitute: a Relu the quantizer folded
    into that QuantizeLinear is missing from it.
    """
    import onnx

    producer = {o: n for n in proto.graph.node for o in n.output}
    for i in reversed(range(len(proto.graph.node))):
        node = proto.graph.node[i]
        dq = producer.get(node.input[0]) if node.name in exclude and node.input else None
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        fp32 = f"{node.name}_fp32_input"
        proto.graph.node.insert(i, onnx.helper.make_node(
            "Max", [node.input[0], node.input[0]], [fp32], name=fp32))
        node.input[0] = fp32


def nodes_of(model: Path, modules: tuple[str, ...]) -> list[str]:
    """ONNX node names that belong to the given PyTorch module names.

    A node belongs to module M when one of its weights is a parameter of M (initializer
    "M.weight", "M.sub.bias", ...) or when torch.onnx recorded M among its name scopes.

    Raises:
        EdgekitError: a module that owns no node of the graph.
    """
    import onnx

    if not modules:
        return []
    proto = onnx.load(str(model), load_external_data=False)
    weights = {i.name for i in proto.graph.initializer}
    found: dict[str, list[str]] = {m: [] for m in modules}
    for node in proto.graph.node:
        params = [i for i in node.input if i in weights]
        scopes = _name_scopes(node)
        for m in modules:
            if any(p.startswith(m + ".") for p in params) or m in scopes or node.name == m:
                found[m].append(node.name)
    empty = [m for m, nodes in found.items() if not nodes]
    if empty:
        raise EdgekitError(f"--int8-exclude {empty[0]!r} matches no node of model.onnx (onnx-int8)"
                           "; name a layer with weights, e.g. a Conv2d or Linear module")
    return sorted({n for nodes in found.values() for n in nodes})


def _name_scopes(node) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":  # "['', 'features', 'features.0', ...]"
            try:
                return [str(s) for s in ast.literal_eval(prop.value)]
            except (ValueError, SyntaxError):
                return []
    return []
