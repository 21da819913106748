"""Model registry: `@register_model("name")` on a builder returning an nn.Module.

A builder takes keyword arguments `input_shape` (one input without the batch dimension, e.g.
(1, 32, 32) for images or (T, F) for sequences), `num_outputs` and `dropout`, and raises
EdgekitError for an input shape it cannot take. Builders with sizes to choose also take some
of OPTIONS (the recipe's model.hidden, model.layers, ...); a recipe that sets an option its
model does not take is an error, not silently ignored. Names that are not registered but are
torchvision classification models (alexnet, vgg16, googlenet, inception_v3, ...) are built by
edgekit.models.zoo, with input channels and size adapted. A name that says where a model lives
(`my_net.py:Net`, `package.module:build`, `torchvision:NAME`, `timm:NAME`, `model.pt2`, an
`edgekit.models` entry point) is built by edgekit.models.external, the user's own code.

`prepare_model` is what training and `load_run` call: the model, plus a recipe's pretrained
weights and frozen backbone, and the names of the head's parameters (the last Linear layer,
or the last convolution of an all-convolutional classifier), which a new task replaces.
"""

from __future__ import annotations

import functools
import inspect

from edgekit.errors import EdgekitError
from edgekit.models.registry import MODELS, register_model  # noqa: F401

# Recipe keys (model.KEY) passed to the builders that take them, when set (non-zero, non-"").
OPTIONS = ("hidden", "layers", "activation", "embed", "stateful")


def build_model(name: str, *, input_shape: tuple[int, ...], num_outputs: int,
                dropout: float = 0.0, **options):
    """Build a registered or torchvision model.

    Args:
        options: OPTIONS the recipe sets (model.hidden, ...), and `vocab_size` (how many token
            ids the input holds) for data given as token ids; see model_options().

    Raises:
        EdgekitError: an unknown name (listing the valid ones), an input it can't take, or an
            option the model does not have.
    """
    from edgekit.models.external import build_external, is_external

    if name not in MODELS and is_external(name):
        return build_external(name, input_shape=input_shape, num_outputs=num_outputs,
                              dropout=dropout)
    check_model_name(name)
    if name in MODELS:
        builder = MODELS.get(name)
    else:
        from edgekit.models.zoo import torchvision_model

        builder = functools.partial(torchvision_model, name)  # the keywords of a builder
    params = inspect.signature(builder).parameters
    for key, value in options.items():
        if key not in params and value:
            what = f"model.{key}" if key in OPTIONS else f"input given as {key}={value}"
            raise EdgekitError(f"{what} does not apply to model {name!r}; remove it or choose "
                               "a model that takes it")
    kwargs = {k: v for k, v in options.items() if k in params and v}
    return builder(input_shape=tuple(input_shape), num_outputs=num_outputs, dropout=dropout,
                   **kwargs)


def model_options(model_cfg, preprocess: dict) -> dict:
    """The options build_model passes on: the recipe's set OPTIONS plus the data's vocab size.

    Args:
        model_cfg: the recipe's ModelConfig.
        preprocess: the data's preprocess spec (a `text` spec with index encoding has a vocab).
    """
    options = {k: getattr(model_cfg, k) for k in OPTIONS if getattr(model_cfg, k)}
    if preprocess.get("kind") == "text" and preprocess.get("encoding") == "index":
        options["vocab_size"] = len(preprocess["vocab"])
    return options


def check_model_name(name: str) -> None:
    """Raise EdgekitError unless `name` is registered, a torchvision classification model, or
    a location edgekit.models.external builds (checked when built)."""
    from edgekit.models.external import is_external

    if name in MODELS or is_external(name):
        return
    from edgekit.models.zoo import torchvision_names

    if name not in torchvision_names():
        raise EdgekitError(f"unknown model {name!r}; expected one of: {', '.join(list_models())} "
                           "or a torchvision classification model (alexnet, vgg16, googlenet, "
                           "inception_v3, resnet50, efficientnet_b0, ...), or your own as "
                           "FILE.py:NAME or package.module:NAME")


def prepare_model(cfg, input_shape, num_outputs: int, load_weights: bool = True,
                  preprocess: dict | None = None):
    """The model a recipe's `model` section describes, ready to train.

    Args:
        cfg: the recipe's ModelConfig (name, dropout, pretrained, freeze, sizes).
        load_weights: read cfg.pretrained (False when the weights come from a checkpoint or a
            finished run instead).
        preprocess: the data's preprocess spec (token-id text gives an Embedding its size).

    Returns:
        (model, names of the head's parameters).

    Raises:
        EdgekitError: unknown model, unfit input, or a weights file that doesn't fit.
    """
    model = build_model(cfg.name, input_shape=input_shape, num_outputs=num_outputs,
                        dropout=cfg.dropout, **model_options(cfg, preprocess or {}))
    from edgekit.models.external import is_external

    if is_external(cfg.name) and not (cfg.freeze or cfg.pretrained):
        return model, set()  # the user's own model: no head to replace
    head = head_module(model)
    head_params = {f"{head}.{n}" for n, _ in model.get_submodule(head).named_parameters()}
    if cfg.pretrained and load_weights:
        from edgekit.models.weights import load_pretrained

        load_pretrained(model, cfg.pretrained, cfg.name, skip=head)
    if cfg.freeze:  # train the head only; the rest is a fixed feature extractor
        for name, p in model.named_parameters():
            p.requires_grad_(name in head_params)
        model.frozen_modules = [m for n, m in model.named_modules()
                                if not any(True for _ in m.children())
                                and not (n == head or n.startswith(head + "."))]
    return model, head_params


def head_module(model) -> str:
    """Name of the classifier head: the last Linear layer, else the last Conv2d (squeezenet)."""
    from torch import nn

    for kind in (nn.Linear, nn.Conv2d):
        names = [n for n, m in model.named_modules() if isinstance(m, kind)]
        if names:
            return names[-1]
    raise EdgekitError(f"{type(model).__name__} has no Linear or Conv2d layer to serve as a head")


def list_models() -> list[str]:
    return MODELS.names()


# Builders register themselves on import.
from edgekit.models import handbook, lenet, mlp, recurrent, zoo  # noqa: E402, F401
