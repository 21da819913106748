"""Run exported artifacts. Importing this package needs numpy only (no torch, no onnx).

    runner = edgekit.runtime.load("model.int8.onnx")
    runner.predict("digit.png", k=3)   # {"label": "3", "probability": 0.98, "top": [...]}
    runner.run(x)                      # (B, 1, 32, 32) float32 -> (B, 10) logits

`predict` takes raw input of the manifest's preprocess kind (for images: a path, encoded bytes
or a PIL image) and returns the JSON-able result of the manifest's task; `edgekit predict` and
`edgekit serve` both go through it. What a Pi runs; nothing here imports training or export.

    runner.py      the Runner: one loaded artifact, whatever its backend
    onnx.py, torchscript.py, pte.py   one runner per backend (the format catalog names them)
    preprocess/    the preprocess kinds (image, tabular, text, array): raw input -> model input
    batch.py       `edgekit predict` over many inputs, streamed in order;  rows.py  big tables
    video.py       `edgekit predict` on a video file or a camera: a result per frame, drops
    serve.py       `edgekit serve`: one artifact behind HTTP
    throughput.py  counts and times of a prediction run
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edgekit import formats
from edgekit import manifest as mf
from edgekit.errors import EdgekitError
from edgekit.fileio import not_a_file
from edgekit.machine import check_threads
from edgekit.runtime.runner import Runner, embedded_or_listed  # noqa: F401 (the face)

DEVICES = ("cpu", "cuda")


def load(path: str | Path, threads: int | None = None, device: str = "cpu",
         verify: bool = True) -> Runner:
    """Load an artifact with the backend its suffix names.

    Args:
        path: a file of a suffix the format catalog lists (edgekit.formats): `.onnx`
            (onnxruntime), `.ts` (TorchScript, needs torch), ...
        threads: intra-op threads; None lets the backend choose.
        device: "cpu", or "cuda" / "cuda:N" (onnxruntime-gpu's CUDA provider; torch with CUDA).
        verify: when a manifest.json beside the file lists it, require its sha256 to match.

    Raises:
        EdgekitError: missing or empty file, unknown suffix or device, more threads than this
            machine's usable cores, a sha256 mismatch, or a file that is not a valid model.
    """
    path, backends = Path(path), formats.backends()
    if not path.is_file():
        raise EdgekitError(f"artifact {str(path)!r} {not_a_file(path)}; "
                           f"expected a {' or '.join(backends)} file")
    if path.suffix not in backends:
        raise EdgekitError(
            f"artifact {str(path)!r}: unknown format {path.suffix or '(no suffix)'!r}; "
            f"expected one of: {', '.join(backends)}"
        )
    if path.stat().st_size == 0:
        raise EdgekitError(f"artifact {str(path)!r} is empty (0 bytes); expected a "
                           f"{path.suffix} model")
    kind, index = parse_device(device)
    check_threads(threads)
    listed = mf.beside(path, verify)  # the checksum first: a damaged file fails as damaged
    module, _, name = backends[path.suffix].backend.partition(":")
    runner = getattr(importlib.import_module(module), name)  # by name: no import edge
    return runner(path, listed, threads, kind, index)


def parse_device(device: str) -> tuple[str, int | None]:
    """"cpu" -> ("cpu", None); "cuda" -> ("cuda", None); "cuda:1" -> ("cuda", 1)."""
    kind, _, index = str(device).partition(":")
    if kind in DEVICES and (not index or (kind == "cuda" and index.isdigit())):
        return kind, int(index) if index else None
    raise EdgekitError(f"device {device!r}; expected cpu, cuda or cuda:N")


