"""The rules of a manifest's preprocess spec, per kind: below the manifest and the runtime.

`edgekit.manifest` validates a spec with `validate` without importing the runtime package;
the runtime's kinds (edgekit.runtime.preprocess) take their keys and checks from here, and own
everything else about their input (reading, decoding, arrays). Plain Python: no numpy.

    image     mode (L, RGB), size [H, W], resample, scale, mean, std (one per channel),
              resize (optional, >= the size: shorter side before a center crop)
    tabular   columns: name, type (numeric or category), mean, std > 0, a category's values
    text      vocab (distinct single characters), length, encoding (onehot or index)
    array     shape: positive ints
"""

from __future__ import annotations

import math
from typing import Any

from edgekit.errors import EdgekitError, excerpt

MODES = {"L": 1, "RGB": 3}  # image mode -> channels
RESAMPLE = ("nearest", "bilinear", "bicubic")
ENCODINGS = ("onehot", "index")  # text: one-hot rows, or token ids for an embedding
KEYS = {
    "image": ("mode", "size", "resample", "scale", "mean", "std"),
    "tabular": ("columns",),
    "text": ("vocab", "length", "encoding"),
    "array": ("shape",),
}


def validate(spec: Any, source: str) -> None:
    """Check a manifest's preprocess spec by its kind's rules.

    Raises:
        EdgekitError: naming `source`, and the unknown kind or the first missing or bad key.
    """
    if not isinstance(spec, dict):
        raise EdgekitError(f"{source}: manifest preprocess must be an object with a kind")
    kind = spec.get("kind")
    if kind not in KEYS:
        raise EdgekitError(f"{source}: manifest preprocess kind {kind!r}; expected one of: "
                           f"{', '.join(KEYS)}")
    check(kind, spec, source)


def check(kind: str, spec: dict, source: str) -> None:
    """Check a spec of a known `kind`: its keys are present, then its kind's own rules."""
    missing = [k for k in KEYS[kind] if k not in spec]
    if missing:
        raise EdgekitError(f"{source}: manifest preprocess ({kind}) is missing "
                           f"{', '.join(missing)}")
    CHECKS[kind](spec, source)


def check_image(spec: dict, source: str) -> None:
    """An image spec's values (its keys are present)."""
    where = f"{source}: manifest preprocess"
    if spec["mode"] not in MODES:
        raise EdgekitError(f"{where} mode {spec['mode']!r}; expected one of: L, RGB")
    size = spec["size"]
    if not (isinstance(size, list) and len(size) == 2
            and all(type(s) is int and s > 0 for s in size)):
        raise EdgekitError(f"{where} size {size!r}; expected [height, width], positive ints")
    if spec["resample"] not in RESAMPLE:
        raise EdgekitError(f"{where} resample {spec['resample']!r}; expected one of: "
                           f"{', '.join(RESAMPLE)}")
    if not (_number(spec["scale"]) and spec["scale"] > 0):
        raise EdgekitError(f"{where} scale {spec['scale']!r}; expected a positive number")
    channels = MODES[spec["mode"]]
    for key in ("mean", "std"):
        values = spec[key]
        if not (isinstance(values, list) and len(values) == channels
                and all(_number(v) for v in values)):
            raise EdgekitError(f"{where} {key} {values!r}; expected {channels} numbers for "
                               f"mode {spec['mode']}")
    if not all(s > 0 for s in spec["std"]):
        raise EdgekitError(f"{where} std {spec['std']!r}; expected positive numbers")
    resize = spec.get("resize", max(size))
    if not (type(resize) is int and resize >= max(size)):
        raise EdgekitError(f"{where} resize {resize!r}; expected an int >= the size "
                           f"{max(size)} (the shorter side before the center crop)")
    fast = spec.get("fast", {"allowed": False})  # export's verdict on the fast image path
    if not (isinstance(fast, dict) and isinstance(fast.get("allowed"), bool)):
        raise EdgekitError(f"{where} fast {excerpt(fast)}; expected the export's verdict, "
                           'an object with "allowed": true or false')
    cv = fast.get("opencv", {"allowed": False})  # the same for the OpenCV resize
    if not (isinstance(cv, dict) and isinstance(cv.get("allowed"), bool)):
        raise EdgekitError(f"{where} fast.opencv {excerpt(cv)}; expected the export's verdict, "
                           'an object with "allowed": true or false')


def check_tabular(spec: dict, source: str) -> None:
    """A tabular spec's columns. Raises EdgekitError naming the first bad column."""
    cols = spec.get("columns")
    if not (isinstance(cols, list) and cols):
        raise EdgekitError(f"{source}: manifest preprocess (tabular) needs a non-empty list of "
                           "columns")
    for i, col in enumerate(cols):
        ok = (isinstance(col, dict) and isinstance(col.get("name"), str)
              and col.get("type") in ("numeric", "category")
              and all(isinstance(col.get(k), (int, float)) for k in ("mean", "std"))
              and col["std"] > 0)
        if ok and col["type"] == "category":
            values = col.get("values")
            ok = isinstance(values, list) and values and all(isinstance(v, str) for v in values)
        if not ok:
            raise EdgekitError(f"{source}: manifest preprocess column {i} must give name, type "
                               "(numeric or category), mean, std > 0 and, for a category, its "
                               f"values; got {col!r}")


def check_text(spec: dict, source: str) -> None:
    """A text spec. Raises EdgekitError naming what is wrong."""
    vocab = spec.get("vocab")
    if not (isinstance(vocab, list) and vocab and len(set(vocab)) == len(vocab)
            and all(isinstance(c, str) and len(c) == 1 for c in vocab)):
        raise EdgekitError(f"{source}: manifest preprocess (text) vocab must be a list of "
                           f"distinct single characters; got {vocab!r}")
    length = spec.get("length")
    if not (type(length) is int and length > 0):
        raise EdgekitError(f"{source}: manifest preprocess (text) length must be a positive "
                           f"integer; got {length!r}")
    if spec.get("encoding") not in ENCODINGS:
        raise EdgekitError(f"{source}: manifest preprocess (text) encoding must be one of "
                           f"{', '.join(ENCODINGS)}; got {spec.get('encoding')!r}")


def check_array(spec: dict, source: str) -> None:
    """An array spec's shape."""
    shape = spec.get("shape")
    if not (isinstance(shape, list) and all(type(d) is int and d > 0 for d in shape)):
        raise EdgekitError(f"{source}: manifest preprocess (array) shape must be a list of "
                           f"positive integers; got {shape!r}")


CHECKS = {"image": check_image, "tabular": check_tabular, "text": check_text,
          "array": check_array}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
