"""LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling, for 32x32 inputs."""

from __future__ import annotations

import torch
from torch import nn

from edgekit.errors import EdgekitError
from edgekit.models.registry import register_model


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2),  # (B, 6, 14, 14)
            nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 5, 5)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, 400)
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(120, 84), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, 32, 32) -> logits (B, num_classes)."""
        return self.classifier(self.features(x))


@register_model("lenet5")
def lenet5(input_shape: tuple[int, ...], num_outputs: int, dropout: float = 0.0) -> nn.Module:
    if len(input_shape) != 3 or input_shape[1:] != (32, 32):
        raise EdgekitError(
            f"lenet5 takes images of shape (C, 32, 32), got {input_shape}; set data.image_size=32"
        )
    return LeNet5(num_outputs, input_shape[0], dropout)
