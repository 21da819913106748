"""Models over a vector of features (B, F): a linear layer, and a multi-layer perceptron.

`linear` is regression (`Linear(1, 1)` on y = 5x + 7) and logistic regression (`Linear(24, 2)`
under cross-entropy); `mlp` stacks hidden layers, with `activation: none` a purely linear stack
(the spiral that a linear model cannot separate).
"""

from __future__ import annotations

from torch import nn

from edgekit.errors import EdgekitError
from edgekit.models.registry import register_model

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "none": nn.Identity}


def _features(name: str, input_shape: tuple[int, ...]) -> int:
    if len(input_shape) != 1:
        raise EdgekitError(f"{name} takes a vector of features (F,), got input shape "
                           f"{input_shape}; use a tabular or array dataset")
    return input_shape[0]


@register_model("linear")
def linear(input_shape: tuple[int, ...], num_outputs: int, dropout: float = 0.0) -> nn.Module:
    """(B, F) -> (B, num_outputs): one affine map."""
    features = _features("linear", input_shape)
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_outputs))


@register_model("mlp")
def mlp(input_shape: tuple[int, ...], num_outputs: int, dropout: float = 0.0, hidden: int = 100,
        layers: int = 1, activation: str = "relu") -> nn.Module:
    """(B, F) -> (B, num_outputs) through `layers` hidden layers of width `hidden`."""
    features = _features("mlp", input_shape)
    if activation not in ACTIVATIONS:
        raise EdgekitError(f"model.activation: expected one of {', '.join(ACTIVATIONS)}, got "
                           f"{activation!r}")
    blocks, width = [], features
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
        if dropout:
            blocks.append(nn.Dropout(dropout))
        width = hidden
    return nn.Sequential(*blocks, nn.Linear(width, num_outputs))
