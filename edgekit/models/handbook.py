"""The small vision models of the classic PyTorch handbooks, layer for layer.

    mnist_convnet  conv 1->10 k5, max-pool 2, conv 10->20 k3, fc 2000->500->10, log_softmax
    mnist_fc       the "FC vs CNN" baseline: MLP 784->8->10
    cifar10_net    the 60-minute blitz net: conv 3->6 k5, pool, conv 6->16 k5, pool,
                   fc 400->120->84->10
    cifar10_vgg    VGG (64,M,128,M,256,256,M,512,512,M,512,512,M) with BatchNorm, Linear(512,10)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgekit.errors import EdgekitError
from edgekit.models.registry import register_model


def _need(name: str, input_shape, size: int) -> None:
    if len(input_shape) != 3 or tuple(input_shape[1:]) != (size, size):
        raise EdgekitError(f"{name} takes images of shape (C, {size}, {size}), got "
                           f"{tuple(input_shape)}; set data.image_size={size}")


class MnistConvNet(nn.Module):
    """Ends in log_softmax: train it with the nll loss."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 10, 5)  # (B, 10, 24, 24)
        self.conv2 = nn.Conv2d(10, 20, 3)  # (B, 20, 10, 10)
        self.fc1 = nn.Linear(20 * 10 * 10, 500)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, 28, 28) -> log-probabilities (B, num_classes)."""
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)  # (B, 10, 12, 12)
        x = torch.relu(self.conv2(x)).flatten(1)  # (B, 2000)
        x = self.dropout(torch.relu(self.fc1(x)))  # (B, 500)
        return torch.log_softmax(self.fc2(x), dim=1)


@register_model("mnist_convnet")
def mnist_convnet(input_shape, num_outputs, dropout=0.0):
    _need("mnist_convnet", input_shape, 28)
    return MnistConvNet(input_shape[0], num_outputs, dropout)


@register_model("mnist_fc")
def mnist_fc(input_shape, num_outputs, dropout=0.0):
    """784 -> 8 -> 10 for a 28x28 image (any image: C*H*W inputs)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 8), nn.ReLU(),
                         nn.Dropout(dropout), nn.Linear(8, num_outputs))


@register_model("cifar10_net")
def cifar10_net(input_shape, num_outputs, dropout=0.0):
    """The 60-minute blitz's CIFAR-10 net: the same layers as LeNet-5 (conv 6 k5, pool, conv 16 k5,
    pool, fc 400-120-84), on colour images."""
    from edgekit.models.lenet import LeNet5

    _need("cifar10_net", input_shape, 32)
    return LeNet5(num_outputs, input_shape[0], dropout)


VGG_CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class Cifar10VGG(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        layers, c = [], in_channels
        for v in VGG_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)  # (B, 512, 1, 1) for 32x32 inputs
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, 32, 32) -> logits (B, num_classes)."""
        return self.classifier(self.dropout(self.features(x).flatten(1)))


@register_model("cifar10_vgg")
def cifar10_vgg(input_shape, num_outputs, dropout=0.0):
    _need("cifar10_vgg", input_shape, 32)
    return Cifar10VGG(input_shape[0], num_outputs, dropout)
