"""The Runner: one loaded artifact, whatever its backend (numpy in, numpy out).

Backends (edgekit.runtime.onnx, edgekit.runtime.torchscript, ...) subclass it; the format
catalog (edgekit.formats) says which backend runs which suffix.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import manifest as mf
from edgekit import tasks
from edgekit.errors import EdgekitError, EdgekitWarning
from edgekit.runtime import preprocess


class Runner:
    """One loaded artifact.

    Backends set `input_name`, `input_shape` (e.g. [None, 1, 32, 32]; None or a name marks a
    dynamic dimension), `input_dtype` and `output_shape`, then call `_ready()`, and implement
    `_run(x) -> first output`; for a stateful model (the manifest's `state`) also
    `_run_state(x, state) -> (first output, new state)`.

    A stateful model's hidden state (L, B, H) is carried from one `run` to the next, so
    consecutive windows of a series continue each other; it starts from zeros, again whenever
    the batch size changes, and after `reset()`.
    """

    backend = ""

    def __init__(self, path: Path, manifest: dict | None, device: str = "cpu"):
        self.path = path
        self.manifest = manifest
        self.device = device
        self.check_finite = True  # warn about NaN/inf inputs (EdgekitWarning)
        self.state: np.ndarray | None = None  # a stateful model's hidden state (L, B, H)
        # True: prepare inputs exactly as training did, even where the export allowed the
        # fast path (edgekit.runtime.preprocess.image; --exact-preprocessing).
        self.exact_preprocessing = False

    def _ready(self) -> None:
        """Precompute what run() checks, so a call costs a few attribute reads."""
        self.input_dtype = np.dtype(self.input_dtype)
        dims = self.input_shape[1:]
        self._item_shape = tuple(dims) if all(type(d) is int for d in dims) else None
        self._float_input = self.input_dtype.kind == "f"
        self._scales: dict[int, np.ndarray] = {}  # input size -> the quick test's vector
        self._state_spec = (self.manifest or {}).get("state")
        if self.manifest is not None:
            tasks.get_task(self.manifest["task"]).check_output(
                self.output_shape, self.manifest, repr(str(self.path)))

    # -- arrays in, arrays out ----------------------------------------------------------------

    def run(self, x: Any) -> np.ndarray:
        """Model input (B, ...) -> the model's first output (B, ...).

        Real-number arrays of another dtype are cast to the input dtype (float64 -> float32);
        integer inputs take integers only.

        Raises:
            EdgekitError: the wrong shape or a dtype that does not convert (complex, str, ...).

        Warns:
            EdgekitWarning: the input holds NaN or inf.
        """
        # The common case costs a few attribute reads and one BLAS call (the per-call cost is
        # measured against a bare InferenceSession.run in benchmarks/test_device_runtime.py).
        if not (type(x) is np.ndarray and x.dtype == self.input_dtype and x.flags.c_contiguous):
            x = self._coerce(x)
        shape = x.shape
        if not shape or shape[1:] != self._item_shape or not shape[0]:
            self._check_shape(shape)
        if self.check_finite and self._float_input:
            # The quick NaN/inf test: the dot product with a vector of 2**-64 is finite unless
            # a value is NaN or inf (|v| * 2**-64 * n stays far below the dtype's limit, so it
            # cannot overflow; in float16 the vector is zeros, and 0 * inf is NaN too). Only
            # +inf and -inf together make numpy warn "invalid value" here, and then the
            # EdgekitWarning follows anyway.
            scale = self._scales.get(x.size)
            if scale is None:
                scale = self._scales.setdefault(x.size, np.full(x.size, 2.0 ** -64, x.dtype))
            if not math.isfinite(x.ravel().dot(scale)):
                self._warn_if_not_finite(x)
        if self._state_spec is None:
            return self._run(x)
        state = self.state
        layers, _, hidden = self._state_spec["shape"]
        if state is None or type(state) is not np.ndarray or state.dtype != np.float32 \
                or state.shape != (layers, len(x), hidden):
            self.state = self._new_state(state, len(x))
        out, self.state = self._run_state(x, self.state)
        return out

    def _new_state(self, state: Any, batch: int) -> np.ndarray:
        """Zeros (L, batch, H) for a new stream (no state yet, or one of another batch size);
        a state the caller set that is not (L, B, H) real numbers is refused."""
        layers, _, hidden = self._state_spec["shape"]
        ok = state is None or (isinstance(state, np.ndarray) and state.ndim == 3
                               and state.shape[0] == layers and state.shape[2] == hidden
                               and state.dtype.kind == "f")
        if ok and state is not None and state.shape[1] == batch:  # float64 from the caller
            return np.ascontiguousarray(state, np.float32)
        if not ok:
            got = (f"shape {tuple(state.shape)} {state.dtype}" if isinstance(state, np.ndarray)
                   else type(state).__name__)
            raise EdgekitError(f"{self.path.name}: state must be a float32 array of shape "
                               f"({layers}, B, {hidden}) (layers, batch, hidden, from the "
                               f"manifest), or None to start a new stream; got {got}")
        return np.zeros((layers, batch, hidden), np.float32)

    @property
    def stateful(self) -> bool:
        """True if the model carries a hidden state from one run() to the next."""
        return self._state_spec is not None

    def use_threads(self, threads: int) -> None:
        """Make this runner's next calls use `threads`: backends whose thread pool is
        process-wide (torch, ExecuTorch) set it here; onnxruntime's is per session."""

    def reset(self) -> None:
        """Forget a stateful model's hidden state: the next run() starts a new stream."""
        self.state = None

    def _run_state(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _coerce(self, x: Any) -> np.ndarray:
        try:
            a = np.asarray(x)
        except (ValueError, TypeError) as e:  # ragged nested lists
            raise EdgekitError(f"{self.path.name}: input is not a numeric array ({e})") from None
        want = self.input_dtype
        if not (a.dtype.kind in "iu" or (want.kind == "f" and a.dtype.kind == "f")):
            allowed = "real numbers" if want.kind == "f" else "integers"
            raise EdgekitError(f"{self.path.name} takes {want} input ({allowed}); got dtype "
                               f"{a.dtype}")
        return np.asarray(a, dtype=want, order="C")  # (ascontiguousarray makes 0-d arrays 1-d)

    def _check_shape(self, shape: tuple) -> None:
        expected = self.input_shape
        ok = len(shape) == len(expected) and len(shape) and shape[0] > 0 and all(
            type(d) is not int or d == s for d, s in zip(expected, shape, strict=True))
        if ok:
            return
        hint = ""
        if len(shape) == len(expected) - 1 and self._item_shape == tuple(shape):
            hint = " (one input without its batch dimension: pass x[None])"
        elif len(shape) == len(expected) and not shape[0]:
            hint = " (an empty batch)"
        raise EdgekitError(f"{self.path.name} takes input {self.input_name!r} of shape "
                           f"{_shape_text(expected)} {self.input_dtype}; got shape "
                           f"{tuple(shape)}{hint}")

    def _warn_if_not_finite(self, x: np.ndarray) -> None:
        message = self.nonfinite_warning(x)
        if message:
            warnings.warn(EdgekitWarning(message), stacklevel=3)

    def nonfinite_warning(self, x: np.ndarray) -> str | None:
        """A one-line warning if the model input `x` holds NaN or inf, else None."""
        if x.dtype.kind != "f":
            return None
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if not bad:
            return None
        return (f"{self.path.name}: the input holds {bad} NaN/inf value(s) of {x.size}; the "
                "outputs may be meaningless")

    def example_input(self, batch: int = 1, seed: int = 0) -> np.ndarray:
        """A random input of the model's shape with the given batch size (zeros for integer
        inputs: token id 0 is valid for every vocabulary, a random integer may not be)."""
        shape = [batch if type(d) is not int else d for d in self.input_shape]
        if self.input_dtype.kind in "iu":
            return np.zeros(shape, self.input_dtype)
        return np.random.default_rng(seed).standard_normal(shape).astype(self.input_dtype)

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- raw input in, JSON-able results out ---------------------------------------------------

    def prepare(self, raw: Any, media_type: str | None = None) -> np.ndarray:
        """One raw input of the manifest's kind -> one model input (no batch dimension).

        Args:
            raw: a file path, an encoded body (bytes, with `media_type`), or the kind's native
                value (a PIL image for `image`).
        """
        spec = self.preprocess_spec()
        return preprocess.get_kind(spec).prepare(raw, spec, media_type)

    def prepare_many(self, raw: Any, media_type: str | None = None) -> np.ndarray:
        """Like `prepare`, for raw input that may hold several inputs (a table's rows, a
        batch of arrays) -> model inputs (B, ...)."""
        spec = self.preprocess_spec()
        return preprocess.get_kind(spec).prepare_many(raw, spec, media_type)

    def preprocess_spec(self) -> dict:
        """The manifest's preprocess spec as this runner applies it: without the export's
        fast-path verdict when `exact_preprocessing` is set."""
        spec = self._require_manifest()["preprocess"]
        if self.exact_preprocessing and "fast" in spec:
            return {k: v for k, v in spec.items() if k != "fast"}
        return spec

    def infer(self, x: np.ndarray, k: int = 5) -> list[dict]:
        """A batch of prepared inputs (B, ...) -> one JSON-able result per row (the task's)."""
        manifest = self._require_manifest()
        return tasks.get_task(manifest["task"]).results(self.run(x), manifest, k)

    def predict_batch(self, raws: list, k: int = 5, media_type: str | None = None) -> list[dict]:
        """Raw inputs of the manifest's kind -> one JSON-able result each, in one batch."""
        return self.infer(np.stack([self.prepare(r, media_type) for r in raws]), k)

    def predict(self, raw: Any, k: int = 5, media_type: str | None = None) -> dict:
        """One raw input of the manifest's kind -> its JSON-able result.

        For classification: {"label", "probability", "top": [{"label", "probability"}, ...]}.
        """
        return self.predict_batch([raw], k, media_type)[0]

    def warm_up(self) -> None:
        """One prediction of the kind's example (else a random input), so the first real one
        does not pay for lazy imports (Pillow, OpenCV), lookup tables and the backend's
        first-run allocations. A stateful model forgets the example's state."""
        spec = self._require_manifest()["preprocess"]
        example = preprocess.get_kind(spec).example(spec)
        if example is not None:
            self.predict(example)
        else:
            self.run(self.example_input(1))
        self.reset()

    def classify(self, x: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """Model input (B, ...) -> for each row the top-k (label, probability)."""
        return [[(t["label"], t["probability"]) for t in r["top"]] for r in self.infer(x, k)]

    def classify_image(self, image: Any, k: int = 5) -> list[tuple[str, float]]:
        """Image file -> top-k (label, probability), prepared as the manifest says."""
        kind = self._require_manifest()["preprocess"]["kind"]
        if kind != "image":
            raise EdgekitError(f"{self.path.name} takes {kind} input, not an image")
        return self.classify(self.prepare(image)[None], k)[0]

    def _require_manifest(self) -> dict:
        if self.manifest is None:
            raise EdgekitError(
                f"{str(self.path)!r} carries no edgekit manifest (labels, preprocessing) and no "
                f"{mf.FILE} beside it lists it; export it with `edgekit export`"
            )
        return self.manifest

    def describe(self) -> dict:
        """What is loaded, for /metadata and --json output."""
        return {"artifact": self.path.name, "backend": self.backend, "device": self.device,
                "input": {"name": self.input_name, "shape": self.input_shape,
                          "dtype": str(self.input_dtype)}}


def embedded_or_listed(path: Path, embedded: str | None, listed: dict | None) -> dict | None:
    """The manifest embedded in the artifact, else the manifest.json that lists it, else None."""
    if embedded:
        return mf.from_json(embedded, f"{path.name} (embedded manifest)")
    return listed


def _shape_text(shape: list) -> str:
    dims = ["B" if i == 0 and type(d) is not int else str(d) if type(d) is int else "?"
            for i, d in enumerate(shape)]
    return f"({', '.join(dims)})"
