"""The format exporters: one module per artifact kind, each with `write(ctx, path, manifest)`.

The format catalog (edgekit.formats) names each format's module; export calls its `write`
(the contract: edgekit.exporting.ExportContext in, [(file, how)] out):

    onnx.py              PyTorch -> ONNX fp32 (torch.onnx dynamo), manifest embedded
    onnx_int8.py         ONNX fp32 -> int8 (onnxruntime.quantization), one file per layout
    onnx_fp16.py         ONNX fp32 -> fp16 weights and activations, for GPU hosts
    torchscript.py       PyTorch -> TorchScript (trace or script, frozen)
    torchscript_int8.py  PyTorch -> int8 TorchScript (torch.ao, the target's engine)
    pte.py               PyTorch -> ExecuTorch .pte lowered to XNNPACK
    pte_int8.py          PyTorch -> int8 .pte (PT2E, XNNPACK quantizer)
    conversion.py        the one line every exporter raises for a model a format cannot take
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Exporter(Protocol):
    """What export needs of a format's module (edgekit.formats names it in `exporter`)."""

    def write(self, ctx: Any, path: Path, manifest: dict) -> list[tuple[Path, dict]]:
        """Write the format's file(s) from ctx (edgekit.exporting.ExportContext).

        Args:
            path: the artifact's path in the stage (ctx.stage / the catalog's file).
            manifest: the embedded manifest, with this artifact's "artifact" entry.

        Returns:
            [(file written, how it was made)]: one for most formats, one per int8 layout
            for those the target times; how["ranges"] == edgekit.exporting.int8.qat.LEARNED
            marks a QAT run's learned ranges.

        Raises:
            EdgekitError: a model the format cannot take (conversion.conversion_error).
        """
