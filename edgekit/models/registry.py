"""The model registry: builders register with `@register_model("name")` (see edgekit.models)."""

from __future__ import annotations

from edgekit.registry import Registry

MODELS: Registry = Registry("model")
register_model = MODELS.register
