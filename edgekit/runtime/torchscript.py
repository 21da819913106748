"""TorchScript runner: loads a frozen module saved by `edgekit export` (needs torch)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, one_line
from edgekit.manifest import EMBED_KEY
from edgekit.runtime.runner import Runner, embedded_or_listed


def torch_device(torch, device: str, index: int | None) -> str:
    """"cpu" or "cuda:N" if this torch can use it. Raises EdgekitError naming what to install."""
    if device == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        if torch.version.cuda:
            why = (f"torch {torch.__version__} is a CUDA build but sees no CUDA device (no NVIDIA "
                   "GPU, or its driver is missing)")
        else:
            why = (f"torch {torch.__version__} is a CPU-only build; install a CUDA build of torch "
                   "on a machine with an NVIDIA GPU")
        raise EdgekitError(f"--device cuda: {why}, or use --device cpu")
    index = index or 0
    if index >= torch.cuda.device_count():
        raise EdgekitError(f"--device cuda:{index}: only {torch.cuda.device_count()} CUDA "
                           "device(s) here")
    return f"cuda:{index}"


class TorchScriptRunner(Runner):
    backend = "torchscript"

    def __init__(self, path: Path, listed: dict | None, threads: int | None = None,
                 device: str = "cpu", index: int | None = None):
        try:
            import torch
        except ImportError:
            raise EdgekitError(
                f"{path.name} is TorchScript, which needs torch; install it, or run the .onnx "
                "artifact instead"
            ) from None
        target = torch_device(torch, device, index)
        if threads:
            torch.set_num_threads(threads)
        self.engine = _use_recorded_engine(torch, path)
        _quiet_quantized_deprecation(torch)
        extra = {EMBED_KEY: ""}
        try:
            with warnings.catch_warnings():  # torch >= 2.10 marks all of torch.jit deprecated
                warnings.simplefilter("ignore", FutureWarning)
                self.module = torch.jit.load(str(path), map_location=target, _extra_files=extra)
        except Exception as e:  # torch raises RuntimeError/ValueError variants
            msg = one_line(e)
            raise EdgekitError(f"{str(path)!r} is not a valid TorchScript model: {msg}") from None
        self.module.eval()
        self._torch = torch
        self._target = torch.device(target)
        super().__init__(path, embedded_or_listed(path, extra[EMBED_KEY] or None, listed), target)
        if self.manifest is None:
            raise EdgekitError(f"{str(path)!r} carries no input shape (no edgekit manifest)")
        if target != "cpu" and self.manifest.get("artifact", {}).get("precision") == "int8":
            raise EdgekitError(f"{path.name} is int8 TorchScript, which runs on the CPU only; "
                               "use --device cpu, or the fp32 model on CUDA")
        self.input_name = self.manifest["input"]["name"]
        self.input_shape = self.manifest["input"]["shape"]
        self.input_dtype = self.manifest["input"]["dtype"]
        self.output_shape = []  # TorchScript files do not declare it; checked on first use
        self._ready()

    def use_threads(self, threads: int) -> None:
        if self._torch.get_num_threads() != threads:  # process-wide
            self._torch.set_num_threads(threads)

    def _run(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        try:
            with torch.inference_mode():
                out = self.module(torch.from_numpy(x).to(self._target))
                return out.float().cpu().numpy()
        except RuntimeError as e:  # TorchScript's shape/type errors carry a long trace
            msg = one_line(e)
            raise EdgekitError(f"{self.path.name}: inference failed on input {x.shape}: "
                               f"{msg}") from None

    def _run_state(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        try:
            with torch.inference_mode():
                out, new = self.module(torch.from_numpy(x).to(self._target),
                                       torch.from_numpy(state).to(self._target))
                return out.float().cpu().numpy(), new.float().cpu().numpy()
        except RuntimeError as e:
            msg = one_line(e)
            raise EdgekitError(f"{self.path.name}: inference failed on input {x.shape} with "
                               f"state {state.shape}: {msg}") from None


def _use_recorded_engine(torch, path: Path) -> str:
    """Switch torch to the quantized engine an int8 artifact was made for, if this torch has it.

    Loading repacks int8 weights for the current engine, so it must be set before
    torch.jit.load: qnnpack for an ARM target, x86 for an x86 one. The engine is read from the
    embedded manifest in the archive (a zip) without loading the model.
    """
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith(f"/extra/{EMBED_KEY}")), None)
            engine = json.loads(z.read(name)).get("artifact", {}).get("quantized_engine") \
                if name else None
    except (OSError, zipfile.BadZipFile, ValueError, AttributeError):
        engine = None  # not an edgekit archive: torch.jit.load reports what is wrong
    if engine and engine in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = engine
    return torch.backends.quantized.engine


def _quiet_quantized_deprecation(torch) -> None:
    """Keep torch's quantized-tensor deprecation notice off stderr.

    torch >= 2.14 warns once per process when a quantized tensor is created; raised inside a
    TorchScript int8 model it is printed by C++, past Python's warning filters. Creating one
    quantized tensor here, where the filters apply, uses up that once.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.quantize_per_tensor(torch.zeros(1), 1.0, 0, torch.quint8)
