"""Preprocess kinds: how raw input of one kind becomes one model input (numpy + Pillow only).

The manifest's `preprocess.kind` names a kind registered here; each kind is one module in
this package and owns everything about its input:

    keys          the manifest keys it needs, checked by `validate(spec, source)`
    suffixes      file suffixes `edgekit predict` picks from a folder
    media_types   HTTP Content-Types `edgekit serve` accepts for POST /predict
    read(path)    a file -> the kind's native value (a PIL image for `image`)
    decode(body)  an HTTP body with its declared media type -> the native value
    to_array(v)   the native value -> one model input without the batch dimension
    example()     a native value to warm up with (optional)

`prepare(raw, spec)` goes from any of those raw forms to the array. Issue 7's kinds (tabular,
text, array) are new modules registered the same way; nothing else branches on the kind.
"""

from __future__ import annotations

from typing import Any

from edgekit.errors import EdgekitError
from edgekit.runtime.preprocess.kind import KINDS, Kind, UnsupportedMediaType


def get_kind(spec: dict) -> Kind:
    """The Kind named by a manifest's preprocess spec. Raises EdgekitError if unknown."""
    return KINDS.get(spec.get("kind") if isinstance(spec, dict) else None)


def validate(spec: Any, source: str) -> None:
    """Check a manifest's preprocess spec with its kind's own rules."""
    if not isinstance(spec, dict):
        raise EdgekitError(f"{source}: manifest preprocess must be an object with a kind")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise EdgekitError(f"{source}: manifest preprocess kind {kind!r}; expected one of: "
                           f"{', '.join(KINDS.names())}")
    KINDS.get(kind).validate(spec, source)


# Kinds register themselves on import; the image helpers stay importable from here.
from edgekit.runtime.preprocess import array, tabular, text  # noqa: E402, F401
from edgekit.runtime.preprocess.image import (  # noqa: E402
    image_spec,
    image_to_array,
    load_image,
)
from edgekit.tasks import softmax, topk  # noqa: E402

__all__ = ["KINDS", "Kind", "UnsupportedMediaType", "get_kind", "validate", "image_spec",
           "image_to_array", "load_image", "softmax", "topk"]
