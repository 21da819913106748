"""Tasks: what a model's outputs mean, owned in one place per task (numpy only, no torch).

The training loop, `evaluate()`, export's `verify()` and the runtime ask the task instead of
branching on task names:

    task = get_task("classification")
    task.loss                        # the loss training uses when train.loss is "auto"
    task.score(outputs, targets)     # the held-out metric (numpy arrays in, float out)
    task.better(new, old)            # is `new` an improvement (higher or lower is better)
    task.decode(outputs)             # outputs -> predictions (class indices, values, ...)

Methods that only reshape (`loss_view`) work on numpy arrays and torch tensors alike, so the
training loop can call them on tensors without this module importing torch.

A new task (regression, per-step sequence classification, sequence regression) is a subclass
registered with `@register_task("name")`.
"""

from __future__ import annotations

import numpy as np

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

    def better(self, new: float, old: float | None) -> bool:
        """True if metric value `new` improves on `old` (None: nothing to beat yet)."""
        if old is None:
            return True
        return new > old if self.higher_is_better else new < old

    def worse_by(self, reference: float, value: float) -> float:
        """How much worse `value` is than `reference`, in the units `format` shows."""
        return reference - value if self.higher_is_better else value - reference

    def format(self, value: float) -> str:
        """The metric as people read it, e.g. '98.61%' or '0.0123'."""
        return f"{value:.4g}"


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

    def format(self, value: float) -> str:
        return f"{value:.2%}"


def get_task(name: str) -> Task:
    """The task registered as `name`. Raises EdgekitError listing the valid names."""
    return TASKS.get(name)()


def list_tasks() -> list[str]:
    return TASKS.names()
