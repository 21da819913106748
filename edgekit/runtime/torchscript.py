"""TorchScript runner: loads a frozen module saved by `edgekit export` (needs torch)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.manifest import EMBED_KEY
from edgekit.runtime import Runner, embedded_or_beside


class TorchScriptRunner(Runner):
    backend = "torchscript"

    def __init__(self, path: Path, threads: int | None = None):
        try:
            import torch
        except ImportError:
            raise EdgekitError(
                f"{path.name} is TorchScript, which needs torch; install it, or run the .onnx "
                "artifact instead"
            ) from None
        if threads:
            torch.set_num_threads(threads)
        extra = {EMBED_KEY: ""}
        try:
            with warnings.catch_warnings():  # torch >= 2.10 marks all of torch.jit deprecated
                warnings.simplefilter("ignore", FutureWarning)
                self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as e:  # torch raises RuntimeError/ValueError variants
            msg = " ".join(str(e).split())[:300]
            raise EdgekitError(f"{str(path)!r} is not a valid TorchScript model: {msg}") from None
        self.module.eval()
        self._torch = torch
        super().__init__(path, embedded_or_beside(path, extra[EMBED_KEY] or None))
        shape = (self.manifest or {}).get("input", {}).get("shape")
        if shape is None:
            raise EdgekitError(f"{str(path)!r} carries no input shape (no edgekit manifest)")
        self.input_shape = shape

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            with self._torch.inference_mode():
                return self.module(self._torch.from_numpy(x)).float().numpy()
        except RuntimeError as e:  # TorchScript's shape/type errors carry a long trace
            msg = " ".join(str(e).split())[:300]
            raise EdgekitError(f"{self.path.name}: inference failed on input {x.shape}: "
                               f"{msg}") from None
