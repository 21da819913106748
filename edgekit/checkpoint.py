"""Checkpoints: everything a run needs to continue exactly where it stopped.

RUN/checkpoint.pt is rewritten after every epoch (and when a signal stops training mid-epoch):
written to a temporary file, fsynced, then moved over the old one with os.replace, so a crash
at any moment leaves the previous checkpoint or the new one, never a torn file. It holds only
tensors and plain Python values (every tensor on the CPU, so a checkpoint made on CUDA resumes
or exports on a CPU machine) and loads with `torch.load(weights_only=True)`.

    {"format": "edgekit-checkpoint", "version": 1, "edgekit": "0.1.0",
     "recipe": {...resolved recipe...}, "data_fingerprint": "...",
     "model": state_dict, "optimizer": ..., "scheduler": ... or None, "scaler": ...,
     "rng": {"torch": ByteTensor, "cuda": [...], "numpy": {...}, "python": [...]},
     "progress": {"epoch": epochs done, "step": steps done in the next epoch,
                  "partial": running sums of that epoch, "history": [...], "best": ... or None,
                  "seconds": training time so far}}
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_path
from edgekit.rundir import CHECKPOINT

FORMAT = "edgekit-checkpoint"
VERSION = 1


def save(path: Path, content: dict) -> None:
    """Write `content` (see the module docstring) atomically and durably to `path`."""
    import torch

    content = {"format": FORMAT, "version": VERSION, "edgekit": __version__,
               **to_cpu(content), "rng": rng_state()}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(content, f)
        f.flush()
        os.fsync(f.fileno())  # the bytes are on disk before the rename makes them current
    _fsync_dir(path.parent)  # and the rename itself survives a power cut


def load(path: Path) -> dict:
    """Read a checkpoint written by `save` (weights only: nothing is unpickled).

    Raises:
        EdgekitError: the file is not an edgekit checkpoint of a version this edgekit reads.
    """

    try:
        content = quiet_load(path)
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError variants
        raise EdgekitError(f"{str(path)!r} is not a readable edgekit checkpoint: "
                           f"{load_failure(e)}") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise EdgekitError(f"{str(path)!r} is not an edgekit checkpoint")
    if content.get("version") != VERSION:
        raise EdgekitError(f"{str(path)!r} is a version {content.get('version')!r} checkpoint; "
                           f"this edgekit reads version {VERSION}")
    return content


def remove_stale(run: Path) -> None:
    """Delete temporary checkpoint files a killed process left behind in `run`."""
    for tmp in run.glob(f".{CHECKPOINT}.*.tmp"):
        tmp.unlink(missing_ok=True)


def to_cpu(obj):
    """A copy of nested dicts/lists/tuples with every tensor moved to the CPU."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def rng_state() -> dict:
    """Every random generator training draws from, as tensors and plain values."""
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "python": [version, list(internal), gauss_next],
    }


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` captured (CUDA states only where CUDA is present)."""
    import torch

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms can't open a directory: the rename is all we can do
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def quiet_load(path: Path):
    """torch.load(weights_only=True) without torch's UserWarning about a pickle protocol: a
    raw pickle gets one line (the refusal), not a warning before it."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol",
                                category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def load_failure(e: BaseException) -> str:
    """Why torch.load(weights_only=True) refused a file, in a few words: the object it would
    not unpickle, without torch's advice to load with weights_only=False (which would run
    whatever code the file holds; edgekit never does)."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # torch's bold/colour escapes
    refused = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\s+Please use|\n\n|$)", text,
                        re.DOTALL)
    if refused:
        return ("it holds Python objects, not only tensors (" + " ".join(refused[1].split())
                + "); edgekit loads tensors only")
    text = " ".join(text.split())
    return f"{type(e).__name__}: {text[:200]}" + ("..." if len(text) > 200 else "")
