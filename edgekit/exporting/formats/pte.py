"""PyTorch -> ExecuTorch `.pte`, lowered to XNNPACK: PyTorch's own edge path.

`torch.export` traces the model with a dynamic batch (ExecuTorch plans its memory for an upper
bound its program records; edgekit's runner splits larger batches), `to_edge_transform_and_lower`
hands every subgraph XNNPACK takes to the XNNPACK delegate, and the program carries the manifest
as a constant method (`edgekit_manifest`), so a `.pte` copied alone still knows its preprocessing
and labels. What XNNPACK does not take runs on ExecuTorch's portable kernels: which operators,
and how many, is recorded (`undelegated`) and shown in the report, never silently.
The int8 program is made by edgekit.exporting.formats.pte_int8 (PT2E) and lowered the same way.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

from edgekit.exporting.formats.conversion import conversion_error
from edgekit.runtime.pte import MANIFEST_METHOD  # the runner reads it back

MAX_BATCH = 32
# Graph nodes that are bookkeeping, not computation left outside the delegate.
PLUMBING = ("executorch_call_delegate", "getitem", "sym_size", "sym_numel", "alloc")


def write(ctx, path: Path, manifest: dict) -> list[tuple[Path, dict]]:
    """Format hook for edgekit.exporting: fp32 XNNPACK program of ctx.model."""
    program = export_program(ctx.model, ctx.example, "pte")
    how = {"name": "xnnpack-fp32"}
    return [(lower(program, path, manifest, how, "pte"), how)]


def export_program(model, example, what: str):
    """torch.export of `model` on `example` with a dynamic batch (dim 0; a state's dim 1).

    Raises:
        EdgekitError: an operator torch.export cannot take (named).
    """
    import torch

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    args, dims = (example,), ({0: batch},)
    if isinstance(example, tuple):  # (input, state (L, B, H)): the state's batch is dim 1
        args, dims = example, ({0: batch}, {1: batch})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(model, args, dynamic_shapes=dims)
    except Exception as e:  # torch.export raises many types; name the operator
        raise conversion_error(f"{what} (torch.export)", e) from None


def lower(program, path: Path, manifest: dict, how: dict, what: str) -> Path:
    """Lower an exported program to XNNPACK and write the `.pte`, manifest embedded.

    Records in `how` the operators left to the portable kernels ({name: count}).

    Raises:
        EdgekitError: an operator ExecuTorch cannot lower or run (named).
    """
    from edgekit.runtime.pte import quiet_torchao_registration

    quiet_torchao_registration()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edge = to_edge_transform_and_lower(
                program, partitioner=[XnnpackPartitioner()],
                constant_methods={MANIFEST_METHOD: json.dumps(manifest)})
            how["undelegated"] = undelegated(edge.exported_program().graph_module)
            buffer = edge.to_executorch().buffer
    except Exception as e:
        raise conversion_error(f"{what} (ExecuTorch, XNNPACK)", e) from None
    path.write_bytes(buffer)
    return path


def undelegated(graph_module) -> dict[str, int]:
    """Operators of a lowered graph that run outside any delegate: {"view_copy": 1, ...}."""
    names = Counter()
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target)).split("::")[-1]
        name = name.removeprefix("aten.").split(".")[0]
        if not name.startswith(PLUMBING):
            names[name] += 1
    return dict(sorted(names.items()))
