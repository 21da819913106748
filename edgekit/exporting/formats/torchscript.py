"""PyTorch -> TorchScript: trace (or script), freeze, save with the manifest as an extra file."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

from edgekit.manifest import EMBED_KEY


def write(ctx, path: Path, manifest: dict) -> list[tuple[Path, dict]]:
    """Format hook for edgekit.exporting: traced, frozen TorchScript of ctx.model."""
    return [(export_torchscript(ctx.model, ctx.example, path, manifest), {})]


def export_torchscript(model, example, path: Path, manifest: dict, what: str = "torchscript"
                       ) -> Path:
    """Trace `model` (eval mode, CPU) on `example` (B, ...), freeze it and save it to `path`.

    Freezing inlines the weights and folds constants; no backend-specific rewrites
    (optimize_for_inference may bake in x86 oneDNN layouts that an ARM machine can't run).

    Raises:
        EdgekitError: the model can be neither traced nor scripted (the operator named).
    """
    import torch

    frozen = to_torchscript(model, example, what)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.10: torch.jit deprecated
        torch.jit.save(frozen, buffer, _extra_files={EMBED_KEY: json.dumps(manifest)})
    # Written from Python, not by torch's C++ writer: on a full disk that writer throws
    # c10::Error from a destructor and the process aborts (exit 134); Python raises ENOSPC.
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())
    return path


def to_torchscript(model, example, what: str = "torchscript"):
    """A frozen ScriptModule of `model`: traced on `example`, scripted if tracing fails.

    A model with control flow that tracing would unroll (`model.script`, e.g. an RNNCell step
    loop) is scripted first, so the loop survives and any sequence length runs. `example` is
    a batch, or a tuple of a stateful model's inputs (batch, state).

    Raises:
        EdgekitError: neither tracing nor scripting works (the first error, named).
    """
    import torch

    from edgekit.exporting.formats.conversion import conversion_error

    with warnings.catch_warnings(), torch.no_grad():
        # torch >= 2.10 marks torch.jit deprecated; it is still what a Pi's libtorch loads.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        module = None
        if getattr(model, "script", False):
            try:
                module = torch.jit.script(model)
            except Exception:  # e.g. quantized modules that only tracing takes
                module = None
        try:
            module = module or torch.jit.trace(model, example, check_trace=True)
        except Exception as traced:  # data-dependent control flow, unsupported outputs
            try:
                module = torch.jit.script(model)
            except Exception:
                raise conversion_error(what, traced) from None
        return torch.jit.freeze(module.eval())
