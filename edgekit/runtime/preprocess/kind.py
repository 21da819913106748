"""The preprocess kind: one way raw input (a file, a body, a value) becomes a model input.

Each kind (image, tabular, array, text) is a `Kind` registered in KINDS by its module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import preprocess_spec
from edgekit.errors import EdgekitError, excerpt
from edgekit.registry import Registry

KINDS: Registry = Registry("preprocess kind")


class UnsupportedMediaType(EdgekitError):
    """A body whose declared media type this kind does not take (HTTP 415)."""


class Kind:
    """One preprocess kind; subclasses override what differs. Instances are stateless."""

    name = ""
    keys: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    media_types: tuple[str, ...] = ()

    def validate(self, spec: dict, source: str) -> None:
        """Raise EdgekitError naming the first missing or ill-typed key of `spec`: the kind's
        rules live in edgekit.preprocess_spec, below the manifest that checks them too."""
        preprocess_spec.check(self.name, spec, source)

    def accepts(self, media_type: str | None) -> bool:
        """Whether a body declared as `media_type` (None: not declared) may be decoded."""
        if not media_type:
            return True
        major = media_type.partition("/")[0]
        return any(t == media_type or t == f"{major}/*" for t in self.media_types)

    def read(self, path: Path, spec: dict) -> Any:
        raise NotImplementedError

    def decode(self, body: bytes, media_type: str | None, spec: dict) -> Any:
        raise NotImplementedError

    def to_array(self, value: Any, spec: dict) -> np.ndarray:
        raise NotImplementedError

    def example(self, spec: dict) -> Any:
        """A native value `serve` predicts once at start-up (None: skip the warm-up)."""
        return None

    def to_batch(self, value: Any, spec: dict) -> np.ndarray:
        """The native value -> model inputs (B, ...): kinds whose value may hold many inputs
        (a table's rows) override this; by default a value is one input."""
        return self.to_array(value, spec)[None]

    def prepare(self, raw: Any, spec: dict, media_type: str | None = None) -> np.ndarray:
        """A file path, an encoded body (bytes) or a native value -> one model input."""
        return self._named(raw, lambda: self.to_array(self._value(raw, spec, media_type), spec))

    def prepare_many(self, raw: Any, spec: dict, media_type: str | None = None) -> np.ndarray:
        """Like `prepare`, for a raw input that may hold several inputs -> (B, ...)."""
        return self._named(raw, lambda: self.to_batch(self._value(raw, spec, media_type), spec))

    def _value(self, raw: Any, spec: dict, media_type: str | None) -> Any:
        if isinstance(raw, os.PathLike):
            return self.read(Path(raw), spec)
        if isinstance(raw, (bytes, bytearray, memoryview)):
            if not self.accepts(media_type):
                raise UnsupportedMediaType(
                    f"{self.name} input is {', '.join(self.media_types)}; got "
                    f"{excerpt(media_type, quote=False)}")
            return self.decode(bytes(raw), media_type, spec)
        return raw

    @staticmethod
    def _named(raw: Any, work):
        """Run `work`; an error about a file's content names the file (several may be given)."""
        try:
            return work()
        except EdgekitError as e:
            name = str(raw) if isinstance(raw, os.PathLike) else None
            if name is None or name in str(e):
                raise
            raise type(e)(f"{name!r}: {e}") from None
