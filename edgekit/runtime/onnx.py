"""onnxruntime runner: numpy in, numpy out. What a Pi runs (no torch needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, one_line
from edgekit.manifest import DTYPES, EMBED_KEY
from edgekit.runtime.runner import Runner, embedded_or_listed

# onnxruntime's type strings -> numpy dtype names (the inputs edgekit can feed are in DTYPES).
ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
             "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32",
             "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def providers(device: str, index: int | None, available: list[str],
              version: str = "") -> list:
    """The execution providers for `device`, given the ones this onnxruntime build has.

    Raises:
        EdgekitError: CUDA asked for but this onnxruntime has no CUDA provider (names the fix).
    """
    if device == "cpu":
        return [CPU]
    if CUDA not in available:
        raise EdgekitError(
            f"--device cuda needs onnxruntime's CUDA execution provider, and this onnxruntime "
            f"{version} has only {', '.join(available)}: pip uninstall onnxruntime && pip install "
            "onnxruntime-gpu (on a machine with an NVIDIA GPU and CUDA/cuDNN), or use --device cpu")
    # CPU after CUDA: the few operators CUDA lacks (some int8 QDQ patterns) run on the CPU.
    return [(CUDA, {"device_id": index or 0}), CPU]


class OnnxRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: Path, listed: dict | None, threads: int | None = None,
                 device: str = "cpu", index: int | None = None):
        import onnxruntime as ort

        chosen = providers(device, index, ort.get_available_providers(), ort.__version__)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3  # errors only: keep warnings about unused initializers out
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=chosen)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            msg = one_line(e)
            raise EdgekitError(f"{str(path)!r} is not a valid ONNX model: {msg}") from None
        if device == "cuda" and self.session.get_providers()[0] != CUDA:
            # onnxruntime-gpu falls back to the CPU when CUDA or cuDNN libraries fail to load.
            raise EdgekitError(
                f"--device cuda: onnxruntime-gpu {ort.__version__} could not start its CUDA "
                "provider (no NVIDIA GPU, or the CUDA/cuDNN libraries its release needs are "
                "missing); install them or use --device cpu")
        meta = self.session.get_modelmeta().custom_metadata_map
        super().__init__(path, embedded_or_listed(path, meta.get(EMBED_KEY), listed),
                         f"cuda:{index or 0}" if device == "cuda" else "cpu")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        # One input, and a stateful model's hidden state as a second input and output.
        state = (self.manifest or {}).get("state")
        names = [i.name for i in inputs]
        if state and (names[1:] != [state["input"]] or len(outputs) != 2):
            raise EdgekitError(f"{str(path)!r} takes ({', '.join(names)}); its manifest says "
                               f"the input and the hidden state {state['input']!r}")
        if len(inputs) != 1 + bool(state) or ORT_TYPES.get(inputs[0].type) not in DTYPES:
            got = ", ".join(f"{i.name}: {i.type}" for i in inputs)
            raise EdgekitError(f"{str(path)!r} takes ({got}); edgekit runs models with one "
                               f"{' or '.join(DTYPES)} input (and a hidden state when the "
                               "manifest names one)")
        self.input_name = inputs[0].name
        self.input_shape = list(inputs[0].shape)
        self.input_dtype = np.dtype(ORT_TYPES[inputs[0].type])
        self.output_shape = list(outputs[0].shape or [])
        if self.manifest and self.manifest["input"]["dtype"] != str(self.input_dtype):
            raise EdgekitError(f"{str(path)!r} takes {self.input_dtype} input but its manifest "
                               f"says {self.manifest['input']['dtype']}")
        self._output_names = [outputs[0].name]
        # InferenceSession.run re-checks the feed's input names in Python on every call, about
        # as long as all of Runner.run's own checks; the names are fixed here, so call the C
        # session it wraps (the public method if a future onnxruntime renames it).
        native = getattr(self.session, "_sess", None)
        self._session_run = native.run if hasattr(native, "run") else (
            lambda names, feed, options: self.session.run(names, feed, options))
        self._state_names = (state["input"], outputs[1].name) if state else None
        self._ready()

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            return self._session_run(self._output_names, {self.input_name: x}, None)[0]
        except Exception as e:  # onnxruntime's InvalidArgument/Fail: wrong shape, bad model
            msg = one_line(e)
            raise EdgekitError(f"{self.path.name}: inference failed on input {x.shape}: "
                               f"{msg}") from None

    def _run_state(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        name_in, name_out = self._state_names
        try:
            out, new = self.session.run([self._output_names[0], name_out],
                                        {self.input_name: x, name_in: state})
        except Exception as e:
            msg = one_line(e)
            raise EdgekitError(f"{self.path.name}: inference failed on input {x.shape} with "
                               f"state {state.shape}: {msg}") from None
        return out, new

    def describe(self) -> dict:
        return {**super().describe(), "providers": self.session.get_providers()}
