"""The `array` preprocess kind: numbers in (a .npy file or JSON), model input out.

    {"kind": "array", "shape": [10, 1]}

One input has `shape`; an array of shape (B, *shape) is a batch of B. The numbers go to the
model as they are (float32): whatever scaling the model needs, it learned on raw values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, one_line
from edgekit.fileio import not_a_file
from edgekit.preprocess_spec import KEYS as KEYS_OF
from edgekit.runtime.preprocess.kind import KINDS, Kind

KEYS = KEYS_OF["array"]


def array_spec(shape: tuple[int, ...]) -> dict:
    return {"kind": "array", "shape": [int(d) for d in shape]}


def read(path: str | Path) -> np.ndarray:
    """A .npy file (no pickles) or a .json file of numbers -> an array."""
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"input {str(path)!r} {not_a_file(path)}; expected a .npy or .json "
                           "file of numbers")
    if path.suffix.lower() == ".json":
        try:
            return from_json(path.read_text(encoding="utf-8"), str(path))
        except UnicodeDecodeError as e:
            raise EdgekitError(f"{str(path)!r} is not UTF-8 text: {e}") from None
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        msg = one_line(e, 200)
        raise EdgekitError(f"{str(path)!r} is not a .npy array (or holds objects): {msg}") \
            from None


def from_json(text: str, source: str) -> np.ndarray:
    """JSON numbers (nested lists) -> an array."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise EdgekitError(f"{source}: not valid JSON ({e})") from None
    return to_numbers(value, source)


def to_numbers(value, source: str) -> np.ndarray:
    try:
        a = np.asarray(value)
    except ValueError as e:  # ragged nested lists
        raise EdgekitError(f"{source}: not a rectangular array of numbers ({e})") from None
    if a.dtype.kind not in "iuf" or a.dtype == bool:
        raise EdgekitError(f"{source}: expected numbers, got values of type {a.dtype}")
    return a


def to_batch(value, spec: dict, source: str = "input") -> np.ndarray:
    """Numbers of shape `spec.shape` (one input) or (B, *shape) -> (B, *shape) float32.

    Raises:
        EdgekitError: another shape, or values that are not finite numbers.
    """
    a = to_numbers(value, source)
    shape = tuple(spec["shape"])
    if a.shape == shape:
        a = a[None]
    elif not (a.ndim == len(shape) + 1 and a.shape[1:] == shape and len(a)):
        raise EdgekitError(f"{source}: expected numbers of shape {shape} (one input) or "
                           f"(B, {', '.join(map(str, shape))}) (a batch); got {a.shape}")
    if not np.isfinite(a).all():
        raise EdgekitError(f"{source}: holds NaN or infinite values")
    return np.ascontiguousarray(a, dtype=np.float32)


class ArrayKind(Kind):
    """Numbers of the model's input shape: a .npy file, a .json list, or an array."""

    name = "array"
    keys = KEYS
    suffixes = (".npy", ".json")
    media_types = ("application/json", "application/octet-stream")

    def read(self, path: Path, spec: dict) -> np.ndarray:
        return read(path)

    def decode(self, body: bytes, media_type: str | None, spec: dict) -> np.ndarray:
        if body[:6] == b"\x93NUMPY":
            import io

            try:
                return np.load(io.BytesIO(body), allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise EdgekitError(f"body is not a .npy array: {e}") from None
        try:
            return from_json(body.decode("utf-8"), "body")
        except UnicodeDecodeError as e:
            raise EdgekitError(f"body is neither .npy nor JSON numbers: {e}") from None

    def to_array(self, value, spec: dict) -> np.ndarray:
        batch = to_batch(value, spec)
        if len(batch) != 1:
            raise EdgekitError(f"array input is one input of shape {tuple(spec['shape'])}; got "
                               f"a batch of {len(batch)}: give one input per file")
        return batch[0]

    def to_batch(self, value, spec: dict) -> np.ndarray:
        return to_batch(value, spec)

    def example(self, spec: dict) -> np.ndarray:
        return np.zeros(spec["shape"], np.float32)


KINDS.register("array")(ArrayKind())
