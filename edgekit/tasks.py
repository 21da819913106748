"""Tasks: what a model's outputs mean, owned in one place per task (numpy only, no torch).

The training loop, `evaluate()`, export's `verify()` and the runtime ask the task instead of
branching on task names:

    task = get_task("classification")
    task.loss                        # the loss training uses when train.loss is "auto"
    task.score(outputs, targets)     # the held-out metric (numpy arrays in, float out)
    task.better(new, old)            # is `new` an improvement (higher or lower is better)
    task.decode(outputs)             # outputs -> predictions (class indices, values, ...)
    task.results(outputs, manifest)  # outputs -> one JSON-able result per row (predict, serve)
    task.validate(manifest, source)  # the manifest keys this task needs (runtime load)

Methods that only reshape (`loss_view`) work on numpy arrays and torch tensors alike, so the
training loop can call them on tensors without this module importing torch.

Each task is a subclass registered with `@register_task("name")`: classification,
sequence_classification (one class per step: character models), regression,
sequence_regression (one value per step) and raw (named output arrays of a model edgekit did
not train: embeddings, a detector's boxes and scores).

Without labels (an unlabeled data folder) a task is scored against the fp32 model itself:
`task.pseudo_targets(reference)` stands in for the targets, so classification's accuracy
becomes top-1 agreement with fp32, and raw's error is measured against fp32's outputs.
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.registry import Registry

TASKS: Registry = Registry("task")
register_task = TASKS.register


class Task:
    """Base class: one instance per task, registered by name.

    Attributes:
        name: the task's registered name (also written to metrics.json and the manifest).
        loss: the loss `train.loss: auto` maps to (a name in edgekit.losses.LOSSES).
        metric: the held-out metric's name ("accuracy", "mse", ...).
        higher_is_better: True for accuracy-like metrics, False for error-like ones.
        target_dtype: numpy dtype of the targets a dataset hands out ("int64", "float32").
    """

    name = ""
    loss = ""
    metric = ""
    higher_is_better = True
    target_dtype = "float32"

    def loss_view(self, outputs, targets):
        """(outputs, targets) reshaped as the loss expects them; identity by default."""
        return outputs, targets

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        """The held-out metric of `outputs` against `targets`."""
        raise NotImplementedError

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """Raw model outputs -> predictions; identity by default."""
        return outputs

    def pseudo_targets(self, reference: np.ndarray) -> np.ndarray:
        """Targets for unlabeled data: what the fp32 model predicts (scores become agreement)."""
        return self.decode(reference)

    def better(self, new: float, old: float | None) -> bool:
        """True if metric value `new` improves on `old` (None: nothing to beat yet)."""
        if old is None:
            return True
        return new > old if self.higher_is_better else new < old

    def worse_by(self, reference: float, value: float) -> float:
        """How much worse `value` is than `reference`, in the units `format` shows."""
        return reference - value if self.higher_is_better else value - reference

    def drop_points(self, reference: np.ndarray, outputs: np.ndarray,
                    targets: np.ndarray) -> float:
        """How many points of a 0-100 score `outputs` lose against `reference` on `targets`.

        The one number export's `max_int8_drop` bounds: accuracy points for classification,
        R² points (the MSE change as a percentage of the targets' variance) for regression.
        """
        return 100 * (self.score(reference, targets) - self.score(outputs, targets)) \
            * (1 if self.higher_is_better else -1)

    def format(self, value: float) -> str:
        """The metric as people read it, e.g. '98.61%' or '0.0123'."""
        return f"{value:.4g}"

    # -- the runtime side: manifests and JSON results ------------------------------------------

    def validate(self, manifest: dict, source: str) -> None:
        """Raise EdgekitError naming a manifest key this task needs that is missing or wrong."""

    def check_output(self, shape: list, manifest: dict, source: str) -> None:
        """Raise EdgekitError if the model's output shape (from the model file) cannot be right."""

    def results(self, outputs: np.ndarray, manifest: dict, k: int = 5) -> list[dict]:
        """A batch of raw outputs -> one JSON-able result per row (predict --json, serve)."""
        raise NotImplementedError

    def target(self, y: np.ndarray, labels: list[str] | None):
        """A held-out target as a JSON-able value (what `predict --sample` shows)."""
        return _json_values(np.asarray(y, np.float64))

    def line(self, result: dict) -> str:
        """One result as a person reads it on the command line."""
        return " ".join(f"{t['label']} {t['probability']:.4f}" for t in result.get("top", []))


@register_task("classification")
class Classification(Task):
    """Class scores over the last axis: (B, K), or (B, T, K) for one label per step.

    Outputs may be logits or log-probabilities (a model ending in log_softmax): argmax and
    softmax give the same predictions and probabilities for both.
    """

    name = "classification"
    loss = "cross_entropy"
    metric = "accuracy"
    higher_is_better = True
    target_dtype = "int64"

    def loss_view(self, outputs, targets):
        # (B, ..., K) scores, (B, ...) class indices -> (N, K), (N,): one row per prediction.
        return outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1)

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        return float((self.decode(outputs) == targets).mean())

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        return np.asarray(outputs).argmax(-1)

    def worse_by(self, reference: float, value: float) -> float:
        return (reference - value) * 100  # accuracy points

    def target(self, y: np.ndarray, labels: list[str] | None):
        """The class name of label index `y` ((T,) indices: one name per step)."""
        y = np.asarray(y)
        names = [labels[int(i)] if labels and 0 <= int(i) < len(labels) else str(int(i))
                 for i in y.reshape(-1)]
        return names[0] if y.ndim == 0 else names

    def format(self, value: float) -> str:
        return f"{value:.2%}"

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

    def results(self, outputs: np.ndarray, manifest: dict, k: int = 5) -> list[dict]:
        """Logits (B, K) -> per row the best label, its probability and the top-k."""
        top = topk(softmax(outputs), manifest["labels"], k)
        return [{"label": row[0][0], "probability": _json_number(row[0][1]),
                 "top": [{"label": name, "probability": _json_number(p)} for name, p in row]}
                for row in top]


@register_task("sequence_classification")
class SequenceClassification(Classification):
    """One class per step: scores (B, T, K) against labels (B, T), e.g. a character model.

    The metric is the accuracy over all steps; `decode` gives (B, T) class indices, which the
    labels (the output vocabulary) turn into text ("hello" -> "ohlol").
    """

    name = "sequence_classification"

    def sequences_equal(self, outputs: np.ndarray, reference: np.ndarray) -> float:
        """The fraction of sequences whose every step decodes as in `reference`."""
        return float((self.decode(outputs) == self.decode(reference)).all(-1).mean())

    def results(self, outputs: np.ndarray, manifest: dict, k: int = 5) -> list[dict]:
        """Scores (B, T, K) -> per row the decoded text, each step's label and probability.

        Labels of one character join into a string ("ohlol"); longer ones with spaces.
        """
        labels = manifest["labels"]
        probs = softmax(np.asarray(outputs, np.float64))  # (B, T, K)
        best = probs.argmax(-1)  # (B, T)
        sep = "" if all(len(x) == 1 for x in labels) else " "
        return [{"text": sep.join(labels[i] for i in row),
                 "labels": [labels[i] for i in row],
                 "probabilities": [_json_number(float(p[i])) for p, i in zip(ps, row,
                                                                              strict=True)]}
                for ps, row in zip(probs, best, strict=True)]

    def line(self, result: dict) -> str:
        return result["text"]

    def target(self, y: np.ndarray, labels: list[str] | None) -> str:
        names = super().target(y, labels)
        return ("" if all(len(n) == 1 for n in names) else " ").join(names)


@register_task("regression")
class Regression(Task):
    """Real values: outputs (B, D) against targets (B, D), lower mean squared error is better.

    `labels` name the D output columns. The int8 bound is in R² points: an MSE rise of 1% of
    the targets' variance is one point, so one threshold means the same for every scale of y.
    """

    name = "regression"
    loss = "mse"
    metric = "mse"
    higher_is_better = False
    target_dtype = "float32"

    def loss_view(self, outputs, targets):
        # A model's (B, 1) output against (B,) targets would broadcast to (B, B): match shapes.
        return outputs.reshape(targets.shape), targets

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        diff = np.asarray(outputs, np.float64).reshape(np.shape(targets)) - targets
        return float(np.mean(diff ** 2))

    def drop_points(self, reference: np.ndarray, outputs: np.ndarray,
                    targets: np.ndarray) -> float:
        variance = float(np.var(np.asarray(targets, np.float64)))
        rise = self.score(outputs, targets) - self.score(reference, targets)
        return 100 * rise / max(variance, 1e-12)

    def validate(self, manifest: dict, source: str) -> None:
        labels = manifest.get("labels")
        if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
            raise EdgekitError(f"{source}: manifest labels must name the outputs (a non-empty "
                               "list of strings)")

    def check_output(self, shape: list, manifest: dict, source: str) -> None:
        width = shape[-1] if shape else None
        if isinstance(width, int) and width != len(manifest["labels"]):
            raise EdgekitError(f"{source} has {width} outputs but its manifest names "
                               f"{len(manifest['labels'])}")

    def results(self, outputs: np.ndarray, manifest: dict, k: int = 5) -> list[dict]:
        """Values (B, D) -> per row {"values": [D numbers], "labels": their names}; (B, T, D)
        -> {"values": [T lists of D numbers]} for one value per step."""
        labels = manifest["labels"]
        return [{"values": _json_values(np.asarray(row, np.float64)), "labels": labels}
                for row in outputs]

    def line(self, result: dict) -> str:
        values = result["values"]
        if values and isinstance(values[0], list):  # one row per step
            return "; ".join(" ".join(_number_text(v) for v in step) for step in values)
        return ", ".join(f"{name} = {_number_text(v)}"
                         for name, v in zip(result["labels"], values, strict=True))


@register_task("sequence_regression")
class SequenceRegression(Regression):
    """Real values per step: outputs (B, T, D) against targets (B, T, D), e.g. sin -> cos."""

    name = "sequence_regression"


@register_task("raw")
class Raw(Task):
    """Named output arrays, not class scores: (B, D), every output of the model flattened and
    packed side by side, split again by the manifest's `outputs` ([{"name", "shape"}], the
    shape of one input's output). The metric is the relative error (L2 norm of the
    difference over the L2 norm of the targets, fp32's outputs); int8's budget is in percent
    of it.
    """

    name = "raw"
    loss = "mse"
    metric = "relative_error"
    higher_is_better = False

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        t = np.asarray(targets, np.float64).reshape(len(targets), -1)
        diff = np.asarray(outputs, np.float64).reshape(t.shape) - t
        return float(np.linalg.norm(diff) / max(float(np.linalg.norm(t)), 1e-12))

    def drop_points(self, reference: np.ndarray, outputs: np.ndarray,
                    targets: np.ndarray) -> float:
        return 100 * (self.score(outputs, targets) - self.score(reference, targets))

    def pseudo_targets(self, reference: np.ndarray) -> np.ndarray:
        return reference

    def format(self, value: float) -> str:
        return f"{value:.3%}"

    def validate(self, manifest: dict, source: str) -> None:
        outputs = manifest.get("outputs")
        ok = isinstance(outputs, list) and outputs and all(
            isinstance(o, dict) and isinstance(o.get("name"), str) and isinstance(
                o.get("shape"), list) and all(type(d) is int and d > 0 for d in o["shape"])
            for o in outputs)
        if not ok:
            raise EdgekitError(f"{source}: manifest outputs must be a non-empty list of "
                               '{"name": str, "shape": [positive ints]}')

    def check_output(self, shape: list, manifest: dict, source: str) -> None:
        width = shape[-1] if len(shape) == 2 else None
        need = sum(int(np.prod(o["shape"])) for o in manifest["outputs"])
        if isinstance(width, int) and width != need:
            raise EdgekitError(f"{source} gives {width} values per input but its manifest's "
                               f"outputs need {need}")

    def results(self, outputs: np.ndarray, manifest: dict, k: int = 5) -> list[dict]:
        """(B, D) -> per row {"outputs": {name: nested lists of the output's own shape}}."""
        return [{"outputs": {name: _json_values(part) for name, part in
                             split_outputs(row, manifest["outputs"]).items()}}
                for row in np.asarray(outputs, np.float64)]

    def line(self, result: dict) -> str:
        parts = []
        for name, value in result["outputs"].items():
            flat = np.asarray(value, dtype=np.float64).reshape(-1)
            shown = ", ".join(_number_text(v) for v in flat[:4]) + (", ..." if flat.size > 4
                                                                    else "")
            parts.append(f"{name} {list(np.shape(value))} [{shown}]")
        return "; ".join(parts)


def split_outputs(row: np.ndarray, outputs: list[dict]) -> dict[str, np.ndarray]:
    """One packed (D,) row -> {name: array of the output's shape}, in manifest order."""
    out, start = {}, 0
    for o in outputs:
        size = int(np.prod(o["shape"]))
        out[o["name"]] = row[start:start + size].reshape(o["shape"])
        start += size
    return out


def get_task(name: str) -> Task:
    """The task registered as `name`. Raises EdgekitError listing the valid names."""
    return TASKS.get(name)()


def list_tasks() -> list[str]:
    return TASKS.names()


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


def _json_values(a: np.ndarray):
    """Nested lists of floats, NaN/inf as null."""
    return [_json_values(x) for x in a] if a.ndim else _json_number(float(a))


def _number_text(v: float | None) -> str:
    return "nan" if v is None else f"{v:.6g}"


def _json_number(v: float) -> float | None:
    """NaN/inf (from non-finite inputs) become null: JSON has no NaN."""
    return v if np.isfinite(v) else None
