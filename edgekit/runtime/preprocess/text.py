"""The `text` preprocess kind: characters in, one-hot vectors or token ids out; and back.

    {"kind": "text", "vocab": ["h", "e", "l", "o"], "length": 5, "encoding": "onehot"}

"hello" becomes (5, 4) one-hot float32 rows (encoding "onehot") or the ids (5,) int64
(encoding "index", for a model that starts with an Embedding). `length` is the fixed number of
characters the exported graph takes. A character model's per-step outputs decode back into
text through its labels (the output vocabulary): "ohlol".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, excerpt
from edgekit.fileio import not_a_file
from edgekit.preprocess_spec import ENCODINGS
from edgekit.preprocess_spec import KEYS as KEYS_OF
from edgekit.runtime.preprocess.kind import KINDS, Kind

KEYS = KEYS_OF["text"]


def text_spec(vocab: list[str], length: int, encoding: str = "onehot") -> dict:
    """The preprocess spec for text over `vocab` (single characters), `length` characters."""
    if encoding not in ENCODINGS:
        raise EdgekitError(f"data.encoding: expected one of {', '.join(ENCODINGS)}, got "
                           f"{encoding!r}")
    return {"kind": "text", "vocab": list(vocab), "length": int(length), "encoding": encoding}


def text_to_array(text: str, spec: dict) -> np.ndarray:
    """A string of `length` characters from the vocab -> (T, V) float32 or (T,) int64.

    Raises:
        EdgekitError: a character outside the vocab (named, with its position), or a text of
            the wrong length.
    """
    if not isinstance(text, str):
        raise EdgekitError(f"text input must be a string, got {type(text).__name__}")
    vocab = spec["vocab"]
    index = {c: i for i, c in enumerate(vocab)}
    for pos, ch in enumerate(text):
        if ch not in index:
            raise EdgekitError(f"character {ch!r} (position {pos + 1} of {excerpt(text)}) is "
                               "not in "
                               f"the model's vocabulary: {''.join(vocab)!r}")
    if len(text) != spec["length"]:
        raise EdgekitError(f"the model takes exactly {spec['length']} characters; got "
                           f"{len(text)} ({excerpt(text)})")
    ids = np.array([index[c] for c in text], np.int64)  # (T,)
    if spec["encoding"] == "index":
        return ids
    return np.eye(len(vocab), dtype=np.float32)[ids]  # (T, V)


def decode_text(indices: np.ndarray, labels: list[str]) -> str:
    """Per-step class indices (T,) -> the text their labels spell."""
    return "".join(labels[int(i)] for i in indices)


class TextKind(Kind):
    """A string (`edgekit predict --text hello`, a .txt file, a text/plain body)."""

    name = "text"
    keys = KEYS
    suffixes = (".txt",)
    media_types = ("text/plain",)

    def read(self, path: Path, spec: dict) -> str:
        path = Path(path)
        if not path.is_file():
            raise EdgekitError(f"input {str(path)!r} {not_a_file(path)}; expected a text file "
                               "or --text")
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise EdgekitError(f"{str(path)!r} is not UTF-8 text: {e}") from None

    def decode(self, body: bytes, media_type: str | None, spec: dict) -> str:
        try:
            return body.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise EdgekitError(f"body is not UTF-8 text: {e}") from None

    def to_array(self, value, spec: dict) -> np.ndarray:
        return text_to_array(value, spec)

    def example(self, spec: dict) -> str:
        return spec["vocab"][0] * spec["length"]


KINDS.register("text")(TextKind())
