"""Model registry: `@register_model("name")` on a builder returning an nn.Module.

A builder takes keyword arguments `num_classes`, `in_channels` and `dropout`.
"""

from __future__ import annotations

from edgekit.registry import Registry

MODELS: Registry = Registry("model")
register_model = MODELS.register


def build_model(name: str, *, num_classes: int, in_channels: int, dropout: float = 0.0):
    """Build a registered model. Raises EdgekitError listing the valid names if unknown."""
    return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels, dropout=dropout)


def list_models() -> list[str]:
    return MODELS.names()


# Builders register themselves on import.
from edgekit.models import lenet  # noqa: E402, F401
