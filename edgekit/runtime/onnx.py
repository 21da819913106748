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
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(float)":
            got = ", ".join(f"{i.name}: {i.type}" for i in inputs)
            raise EdgekitError(f"{str(path)!r} takes ({got}); edgekit runs models with one "
                               "float32 input")
        self.input_name = inputs[0].name
        self.input_shape = list(inputs[0].shape)
        classes = outputs[0].shape[-1] if outputs[0].shape else None
        if self.manifest and isinstance(classes, int) and classes != len(self.manifest["labels"]):
            raise EdgekitError(f"{str(path)!r} has {classes} outputs but its manifest names "
                               f"{len(self.manifest['labels'])} labels")

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            return self.session.run(None, {self.input_name: x})[0]
        except Exception as e:  # onnxruntime's InvalidArgument/Fail: wrong shape, bad model
            msg = " ".join(str(e).split())[:300]
            raise EdgekitError(f"{self.path.name}: inference failed on input {x.shape}: "
                               f"{msg}") from None
