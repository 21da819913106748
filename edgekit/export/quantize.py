"""ONNX fp32 -> int8 with onnxruntime static quantization (QDQ), calibrated on training data.

Static, not dynamic: for conv nets dynamic quantization is slower than fp32 on onnxruntime's
CPU provider (see shared/REFERENCE.md), because activations are re-quantized at run time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.export.onnx import INPUT_NAME, check, embed


class ArrayReader:
    """onnxruntime CalibrationDataReader over an array of model inputs (N, ...)."""

    def __init__(self, x: np.ndarray, batch_size: int = 32):
        self._batches = iter(
            [{INPUT_NAME: x[i:i + batch_size]} for i in range(0, len(x), batch_size)]
        )

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def write(ctx, path: Path, manifest: dict) -> None:
    """Format hook for edgekit.export: int8 from the fp32 model.onnx already in ctx.stage."""
    quantize_onnx(ctx.stage / "model.onnx", path, ctx.calibration, ctx.cfg.calibration_method,
                  ctx.cfg.per_channel, manifest)


def quantize_onnx(fp32: Path, out: Path, calibration: np.ndarray, method: str,
                  per_channel: bool, manifest: dict) -> Path:
    """Write a static int8 QDQ model of `fp32` to `out`.

    Args:
        calibration: model inputs (N, ...) float32 that set the activation ranges.
        method: "minmax", "entropy" or "percentile".
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    # Shape inference and graph fusion first, so quantization sees the final graph.
    prepped = out.with_name(out.name + ".pre.onnx")
    try:
        quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
        quantize_static(
            str(prepped), str(out), ArrayReader(calibration.astype(np.float32)),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8, per_channel=per_channel,
            calibrate_method=methods[method],
        )
    finally:
        prepped.unlink(missing_ok=True)
    proto = onnx.load(str(out))
    embed(proto, manifest)
    check(proto)
    onnx.save(proto, str(out))
    return out
