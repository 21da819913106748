"""Model registry: `@register_model("name")` on a builder returning an nn.Module.

A builder takes keyword arguments `input_shape` (one input without the batch dimension, e.g.
(1, 32, 32) for images or (T, F) for sequences), `num_outputs` and `dropout`, and raises
EdgekitError for an input shape it cannot take. Builders with sizes to choose also take some
of OPTIONS (the recipe's model.hidden, model.layers, ...); a recipe that sets an option its
model does not take is an error, not silently ignored.
"""

from __future__ import annotations

import inspect

from edgekit.errors import EdgekitError
from edgekit.registry import Registry

MODELS: Registry = Registry("model")
register_model = MODELS.register

# Recipe keys (model.KEY) passed to the builders that take them, when set (non-zero, non-"").
OPTIONS = ("hidden", "layers", "activation", "embed", "stateful")


def build_model(name: str, *, input_shape: tuple[int, ...], num_outputs: int,
                dropout: float = 0.0, **options):
    """Build a registered model.

    Args:
        options: OPTIONS set by the recipe, and `vocab_size` (how many token indices the input
            holds) for data given as token indices.

    Raises:
        EdgekitError: an unknown name (listing the valid ones), or an option the model lacks.
    """
    builder = MODELS.get(name)
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


def list_models() -> list[str]:
    return MODELS.names()


# Builders register themselves on import.
from edgekit.models import lenet, mlp, recurrent  # noqa: E402, F401
