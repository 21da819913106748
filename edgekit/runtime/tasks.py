"""Tasks on the runtime side: what a model's raw outputs mean, as JSON-able results (numpy only).

The manifest's `task` names a Task registered here. A task validates the manifest keys it needs,
checks the model's output shape against them at load time, and decodes a batch of outputs into
one result per input, the same result `edgekit predict --json` prints and `edgekit serve`
returns. Issue 7's tasks (regression, per-step sequences) register beside classification.
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.registry import Registry

TASKS: Registry = Registry("task")


class Task:
    name = ""

    def validate(self, manifest: dict, source: str) -> None:
        """Raise EdgekitError naming a manifest key this task needs that is missing or wrong."""

    def check_output(self, shape: list, manifest: dict, source: str) -> None:
        """Raise EdgekitError if the model's output shape (from the model file) cannot be right."""

    def decode(self, outputs: np.ndarray, manifest: dict, k: int = 5) -> list[dict]:
        raise NotImplementedError


class Classification(Task):
    """Logits (B, K) -> per row the best label, its probability and the top-k."""

    name = "classification"

    def validate(self, manifest: dict, source: str) -> None:
        if "labels" not in manifest:
            raise EdgekitError(f"{source}: manifest is missing labels")
        labels = manifest["labels"]
        if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
            raise EdgekitError(f"{source}: manifest labels must be a non-empty list of strings")

    def check_output(self, shape: list, manifest: dict, source: str) -> None:
        classes = shape[-1] if shape else None
        if isinstance(classes, int) and classes != len(manifest["labels"]):
            raise EdgekitError(f"{source} has {classes} outputs but its manifest names "
                               f"{len(manifest['labels'])} labels")

    def decode(self, outputs: np.ndarray, manifest: dict, k: int = 5) -> list[dict]:
        top = topk(softmax(outputs), manifest["labels"], k)
        return [{"label": row[0][0], "probability": _json_number(row[0][1]),
                 "top": [{"label": name, "probability": _json_number(p)} for name, p in row]}
                for row in top]


TASKS.register("classification")(Classification())


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (B, K) logits, stable for large values."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def topk(probs: np.ndarray, labels: list[str], k: int) -> list[list[tuple[str, float]]]:
    """(B, K) probabilities -> for each row the k best (label, probability), best first."""
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return [[(labels[i], float(p[i])) for i in row] for p, row in zip(probs, order, strict=True)]


def _json_number(v: float) -> float | None:
    """NaN/inf (from non-finite inputs) become null: JSON has no NaN."""
    return v if np.isfinite(v) else None
