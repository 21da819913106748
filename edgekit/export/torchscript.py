"""PyTorch -> TorchScript: trace, freeze, save with the manifest as an extra file."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from edgekit.manifest import EMBED_KEY


def write(ctx, path: Path, manifest: dict) -> None:
    """Format hook for edgekit.export: traced, frozen TorchScript of ctx.model."""
    export_torchscript(ctx.model, ctx.example, path, manifest)


def export_torchscript(model, example, path: Path, manifest: dict) -> Path:
    """Trace `model` (eval mode, CPU) on `example` (B, ...), freeze it and save it to `path`.

    Freezing inlines the weights and folds constants; no backend-specific rewrites
    (optimize_for_inference may bake in x86 oneDNN layouts that an ARM machine can't run).
    """
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        # torch >= 2.10 marks torch.jit deprecated; it is still what a Pi's libtorch loads.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, example, check_trace=True)
        frozen = torch.jit.freeze(traced)
        torch.jit.save(frozen, str(path), _extra_files={EMBED_KEY: json.dumps(manifest)})
    return path
