"""Model registry: `@register_model("name")` on a builder returning an nn.Module.

A builder takes keyword arguments `input_shape` (one input without the batch dimension, e.g.
(1, 32, 32) for images or (T, F) for sequences), `num_outputs` and `dropout`, and raises
EdgekitError for an input shape it cannot take.
"""

from __future__ import annotations

from edgekit.registry import Registry

MODELS: Registry = Registry("model")
register_model = MODELS.register


def build_model(name: str, *, input_shape: tuple[int, ...], num_outputs: int,
                dropout: float = 0.0):
    """Build a registered model. Raises EdgekitError listing the valid names if unknown."""
    return MODELS.get(name)(input_shape=tuple(input_shape), num_outputs=num_outputs,
                            dropout=dropout)


def list_models() -> list[str]:
    return MODELS.names()


# Builders register themselves on import.
from edgekit.models import lenet  # noqa: E402, F401
