"""onnxruntime runner: numpy in, numpy out. What a Pi runs (no torch needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.manifest import EMBED_KEY
from edgekit.runtime import Runner, embedded_or_beside


class OnnxRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3  # errors only: keep warnings about unused initializers out
        try:
            self.session = ort.InferenceSession(
                str(path), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            msg = " ".join(str(e).split())[:300]
            raise EdgekitError(f"{str(path)!r} is not a valid ONNX model: {msg}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        super().__init__(path, embedded_or_beside(path, meta.get(EMBED_KEY)))
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = list(inp.shape)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]
