"""ONNX fp32 -> fp16 weights and activations, for GPU hosts; inputs and outputs stay float32.

onnxruntime ships the converter (onnxruntime.transformers.float16, the same code as
onnxconverter-common), so this needs no extra dependency. Inputs and outputs keep float32, so
the runtime feeds it like the other artifacts. Verified against PyTorch with export.fp16_atol.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.exporting.formats.onnx import check, embed


def write(ctx, path: Path, manifest: dict) -> list[tuple[Path, dict]]:
    """Format hook for edgekit.exporting: fp16 model of the fp32 model.onnx in ctx.stage."""
    return [(convert_fp16(ctx.stage / "model.onnx", path, manifest), {})]


def convert_fp16(fp32: Path, out: Path, manifest: dict) -> Path:
    """Write `fp32` with float16 weights and compute to `out`, keeping float32 inputs/outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    proto = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    OnnxModel(proto).topological_sort()  # the converter appends its input Casts at the end
    embed(proto, manifest)
    check(proto)
    onnx.save(proto, str(out))
    return out
