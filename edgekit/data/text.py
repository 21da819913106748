"""Character sequences: each input character maps to one output character ("hello" -> "ohlol").

The handbooks' smallest sequence model: a recurrent net reads "hello" and must write "ohlol",
so it has to remember (the two l's map to l and o). There is one sequence, which is both the
training and the test split: the model is meant to learn it exactly.
"""

from __future__ import annotations

import numpy as np

from edgekit.data.splits import ArraySplit, DataSplits, register_dataset
from edgekit.errors import EdgekitError
from edgekit.runtime.preprocess.text import text_spec, text_to_array


@register_dataset("chars")
def chars(cfg) -> DataSplits:
    """`data.text` -> `data.target` (default "hello" -> "ohlol"), one-hot or token ids.

    The vocabulary is every character of both texts in order of first appearance; it is both
    the input vocabulary and the output labels.
    """
    text, target = cfg.text or "hello", cfg.target or ("ohlol" if not cfg.text else "")
    if len(text) != len(target):
        raise EdgekitError(f"data.target must have one character per character of data.text "
                           f"({len(text)}), got {target!r}")
    vocab = list(dict.fromkeys(text + target))
    spec = text_spec(vocab, len(text), cfg.encoding)
    x = text_to_array(text, spec)[None]  # (1, T, V) float32 or (1, T) int64
    y = np.array([[vocab.index(c) for c in target]], np.int64)  # (1, T)
    return DataSplits(train=ArraySplit(x, y), test=ArraySplit(x.copy(), y.copy()),
                      labels=vocab, preprocess=spec, task="sequence_classification")
