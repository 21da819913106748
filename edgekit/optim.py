"""Recipe `train` section -> torch optimizer, learning-rate schedule and L1 penalty.

Every schedule steps once per optimizer step (a `step` schedule's `step_size` counts epochs
and is converted), so a run resumed in the middle of an epoch continues on the same curve.
"""

from __future__ import annotations

from edgekit.errors import EdgekitError

# name -> (torch.optim class, extra keyword arguments taken from the recipe)
OPTIMIZERS = {
    "sgd": ("SGD", ("momentum", "nesterov")),
    "rmsprop": ("RMSprop", ("momentum",)),
    "adagrad": ("Adagrad", ()),
    "adadelta": ("Adadelta", ()),
    "adam": ("Adam", ()),
    "adamw": ("AdamW", ()),
    "adamax": ("Adamax", ()),
}
SCHEDULES = ("none", "step", "cosine", "onecycle")


def param_groups(model, cfg, head: set[str]) -> list[dict]:
    """Trainable parameters, split into backbone and head when their learning rates differ.

    Args:
        head: names of the head's parameters (edgekit.models.prepare_model returns them); with
            cfg.backbone_lr_scale != 1 the rest train at lr x backbone_lr_scale.

    Raises:
        EdgekitError: nothing is left to train.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise EdgekitError("model.freeze left no trainable parameters")
    if cfg.backbone_lr_scale == 1.0 or not head:
        return [{"params": [p for _, p in named], "lr": cfg.lr}]
    backbone = [p for n, p in named if n not in head]
    heads = [p for n, p in named if n in head]
    groups = [{"params": heads, "lr": cfg.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_scale})
    return groups


def build_optimizer(model, cfg, head: set[str] = frozenset()):
    """The optimizer `train.optimizer` names, over the model's trainable parameters.

    Raises:
        EdgekitError: unknown optimizer name, or nesterov without momentum.
    """
    import torch

    if cfg.optimizer not in OPTIMIZERS:
        raise EdgekitError(f"train.optimizer: expected one of {', '.join(OPTIMIZERS)}, "
                           f"got {cfg.optimizer!r}")
    cls, extra = OPTIMIZERS[cfg.optimizer]
    if cfg.nesterov and not (cfg.optimizer == "sgd" and cfg.momentum > 0):
        raise EdgekitError("train.nesterov needs train.optimizer=sgd and train.momentum > 0")
    kwargs = {k: getattr(cfg, k) for k in extra}
    return getattr(torch.optim, cls)(param_groups(model, cfg, head), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay, **kwargs)


def build_scheduler(opt, cfg, steps_per_epoch: int):
    """The learning-rate schedule `train.schedule` names, stepped once per optimizer step.

    Returns:
        A torch LR scheduler, or None for "none".
    """
    import torch

    sched = torch.optim.lr_scheduler
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "none":
        return None
    if cfg.schedule == "step":  # lr x gamma every step_size epochs
        return sched.StepLR(opt, step_size=max(1, cfg.step_size * steps_per_epoch),
                            gamma=cfg.gamma)
    if cfg.schedule == "cosine":
        return sched.CosineAnnealingLR(opt, T_max=total)
    if cfg.schedule == "onecycle":  # warm up to each group's lr, then anneal
        return sched.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                total_steps=total)
    raise EdgekitError(f"train.schedule: expected one of {', '.join(SCHEDULES)}, "
                       f"got {cfg.schedule!r}")


def l1_penalty(model):
    """Sum of |w| over trainable weight matrices and kernels (biases and norms excluded)."""
    return sum(p.abs().sum() for p in model.parameters() if p.requires_grad and p.dim() > 1)
