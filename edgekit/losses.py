"""Recipe loss names -> torch losses, in one place.

    loss_fn = build_loss("cross_entropy", task, label_smoothing=0.1)
    loss = loss_fn(outputs, targets)      # outputs (B, ..., K) or (B, ..., D)

Each loss declares the targets it takes: class indices ("index": cross_entropy, nll) or float
values ("float": the rest). A float loss on integer targets (MSE or BCE on class labels) gets
them one-hot encoded to the outputs' width. The task reshapes outputs and targets first
(`Task.loss_view`), so the loop never branches on the task or the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class LossSpec:
    torch_name: str  # class in torch.nn
    targets: str  # "index" or "float"
    note: str  # what the loss expects of the model's outputs


LOSSES = {
    "cross_entropy": LossSpec("CrossEntropyLoss", "index", "logits"),
    "nll": LossSpec("NLLLoss", "index", "log-probabilities (a model ending in log_softmax)"),
    "bce": LossSpec("BCELoss", "float", "probabilities in [0, 1] (a model ending in sigmoid)"),
    "bce_with_logits": LossSpec("BCEWithLogitsLoss", "float", "logits"),
    "mse": LossSpec("MSELoss", "float", "values"),
    "l1": LossSpec("L1Loss", "float", "values"),
    "smooth_l1": LossSpec("SmoothL1Loss", "float", "values"),
}


def loss_name(name: str, task) -> str:
    """The loss a recipe's `train.loss` names: "auto" takes the task's own."""
    return task.loss if name == "auto" else name


def build_loss(name: str, task, label_smoothing: float = 0.0, reduction: str = "mean"):
    """A callable (outputs, targets) -> loss tensor for the recipe's loss.

    Args:
        name: a key of LOSSES, or "auto" for the task's default.
        task: an edgekit.tasks.Task; reshapes outputs/targets for the loss.
        label_smoothing: cross_entropy only.
        reduction: "mean" for training, "sum" to accumulate over a held-out set.

    Raises:
        EdgekitError: an unknown loss, or label smoothing with a loss that has none.
    """
    import torch

    name = loss_name(name, task)
    if name not in LOSSES:
        raise EdgekitError(f"train.loss: unknown loss {name!r}; expected one of: auto, "
                           + ", ".join(LOSSES))
    spec = LOSSES[name]
    if label_smoothing and name != "cross_entropy":
        raise EdgekitError(f"train.label_smoothing applies to cross_entropy, not {name}; "
                           "set it to 0")
    kwargs = {"label_smoothing": label_smoothing} if name == "cross_entropy" else {}
    loss = getattr(torch.nn, spec.torch_name)(reduction=reduction, **kwargs)

    def fn(outputs, targets):
        outputs, targets = task.loss_view(outputs, targets)
        if spec.targets == "float":
            if not targets.is_floating_point():  # class indices -> one-hot (N, K)
                targets = torch.nn.functional.one_hot(targets, outputs.shape[-1])
            targets = targets.to(outputs.dtype)
        if name == "bce":  # autocast refuses BCELoss in half precision: compute it in fp32
            with torch.autocast(outputs.device.type, enabled=False):
                return loss(outputs.float(), targets.float())
        return loss(outputs, targets)

    return fn
