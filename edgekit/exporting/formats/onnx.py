"""PyTorch -> ONNX fp32 with torch.onnx (dynamo), checked by onnx.checker, manifest embedded."""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.manifest import EMBED_KEY

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# A stateful model's hidden state: a second input and output (edgekit.models.recurrent).
STATE_NAME = "state"
STATE_OUT_NAME = "state_out"


def write(ctx, path: Path, manifest: dict) -> list[tuple[Path, dict]]:
    """Format hook for edgekit.exporting: fp32 ONNX of ctx.model (or of the imported ONNX
    file, ctx.source, for a run without a PyTorch model)."""
    if ctx.model is None:
        return [(copy_onnx(ctx.source, path, manifest), {})]
    return [(export_onnx(ctx.model, ctx.example, path, ctx.cfg.opset, manifest), {})]


def export_onnx(model, example, path: Path, opset: int, manifest: dict) -> Path:
    """Export `model` (eval mode, CPU) to `path` with a dynamic batch dimension.

    Args:
        example: one input batch (B, ...) used to trace the graph, B >= 2 (a batch of 1 lets
            torch.export specialize the batch of RNN/LSTM/GRU layers to 1); or, for a stateful
            model, (input batch, state (L, B, H)): the state becomes a second input and output.
        manifest: embedded as metadata_props[EMBED_KEY].

    Raises:
        EdgekitError: an operator torch.onnx cannot export (named), or a wrong opset.
    """
    import torch

    from edgekit.exporting.formats.conversion import conversion_error

    batch = torch.export.Dim("batch", min=1, max=4096)
    args, inputs, outputs, dims = (example,), [INPUT_NAME], [OUTPUT_NAME], ({0: batch},)
    if isinstance(example, tuple):  # (input, state): the state's batch is its dim 1
        args, inputs = example, [INPUT_NAME, STATE_NAME]
        outputs, dims = [OUTPUT_NAME, STATE_OUT_NAME], ({0: batch}, {1: batch})
    try:
        program = torch.onnx.export(
            model, args, dynamo=True, opset_version=opset, input_names=inputs,
            output_names=outputs, dynamic_shapes=dims, optimize=True, verbose=False,
        )
    except Exception as e:  # torch.export / torch.onnx raise many types; name the operator
        raise conversion_error(f"onnx (opset {opset})", e) from None
    import onnx

    proto = program.model_proto  # a fresh ModelProto on each access: take it once
    got = {o.domain: o.version for o in proto.opset_import}.get("")
    if got != opset:
        raise EdgekitError(f"export.opset: torch.onnx wrote opset {got}, not {opset}; "
                           "choose an opset between 17 and 23")
    embed(proto, manifest)
    check(proto)
    onnx.save(proto, str(path))
    return path


def copy_onnx(source: Path, path: Path, manifest: dict) -> Path:
    """An imported ONNX file (edgekit.onnxsource) as model.onnx: the manifest embedded, checked."""
    import onnx

    proto = onnx.load(str(source))
    embed(proto, manifest)
    check(proto)
    onnx.save(proto, str(path))
    return path


def embed(proto, manifest: dict) -> None:
    """Set the edgekit manifest in an ONNX ModelProto's metadata_props (replacing any)."""
    import onnx

    props = {p.key: p.value for p in proto.metadata_props}
    props[EMBED_KEY] = json.dumps(manifest, sort_keys=True)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)


def check(proto_or_path) -> None:
    """onnx.checker with full shape inference; raises onnx's ValidationError on a bad model."""
    import onnx

    proto = proto_or_path
    if isinstance(proto, (str, Path)):
        proto = onnx.load(str(proto))
    onnx.checker.check_model(proto, full_check=True)
