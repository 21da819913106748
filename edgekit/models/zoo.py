"""torchvision classification models by name, adapted to the recipe's images.

    --set model.name=googlenet     any name in torchvision.models.list_models(torchvision.models)

Adapted, not rewritten: the first convolution takes the data's channels (1 for grayscale);
ResNets and MobileNetV2 below 112 px get a small-image stem (ResNet: 3x3 stride-1 conv and no
max-pool, as for CIFAR; MobileNetV2: first conv stride 1) and keep the ImageNet stem from
112 px; models that take an `image_size` (vision transformers) get the data's; auxiliary
classifiers (googlenet, inception_v3) train with their losses weighted in, and are left out
where the images are too small for them. An input below a model's minimum is a one-line error
naming the minimum, found by running the model on the meta device (no memory, no compute).
"""

from __future__ import annotations

import inspect
from functools import cache

from edgekit.errors import EdgekitError, one_line
from edgekit.models.registry import register_model

SMALL_STEM_BELOW = 112  # px: below this, ResNet/MobileNetV2 use the small-image stem
AUX_WEIGHTS = {"googlenet": 0.3, "inception_v3": 0.4}  # the papers' auxiliary loss weights


@cache
def torchvision_names() -> tuple[str, ...]:
    """Every torchvision classification model name."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


@register_model("resnet18")
def resnet18(input_shape, num_outputs, dropout=0.0):
    """torchvision ResNet-18; a CIFAR-style stem below 112 px, the ImageNet stem from 112 px."""
    return torchvision_model("resnet18", input_shape, num_outputs, dropout)


@register_model("mobilenet_v2")
def mobilenet_v2(input_shape, num_outputs, dropout=0.0):
    """torchvision MobileNetV2; first convolution stride 1 below 112 px."""
    return torchvision_model("mobilenet_v2", input_shape, num_outputs, dropout)


def torchvision_model(name: str, input_shape, num_outputs: int, dropout: float = 0.0):
    """Build torchvision model `name` (random init) for inputs of `input_shape` (C, H, W).

    Args:
        dropout: passed on where the model takes one; 0 keeps the model's own default.

    Raises:
        EdgekitError: not an image shape, dropout the model doesn't take, or images smaller
            than the model's minimum (the message names it).
    """
    if len(input_shape) != 3:
        raise EdgekitError(f"{name} takes images (C, H, W), got input shape {input_shape}")
    kwargs = _kwargs(name, input_shape, num_outputs, dropout)
    error = _meta_forward(name, kwargs, input_shape)
    if error and "aux_logits" in kwargs:  # the auxiliary head needs bigger images: drop it
        kwargs["aux_logits"] = False
        error = _meta_forward(name, kwargs, input_shape)
    if error:
        low = minimum_size(name, kwargs, input_shape)
        c, h, w = input_shape
        what = (f"at least {low}x{low} pixels" if low else "a size it can take")
        raise EdgekitError(f"{name} needs images of {what}, got {h}x{w}"
                           + (f"; set data.image_size={low} or more" if low else f": {error}"))
    model = _build(name, kwargs, input_shape)
    if kwargs.get("aux_logits"):
        model.aux_weight = AUX_WEIGHTS.get(name, 0.4)
    return model


def minimum_size(name: str, kwargs: dict, input_shape, limit: int = 1024) -> int | None:
    """The smallest square image side `name` takes (binary search on the meta device)."""
    c, h, _ = input_shape
    if _meta_forward(name, kwargs, (c, limit, limit)):
        return None
    low, high = h, limit  # low fails, high works
    while high - low > 1:
        mid = (low + high) // 2
        if _meta_forward(name, kwargs, (c, mid, mid)):
            low = mid
        else:
            high = mid
    return high


def _kwargs(name: str, input_shape, num_outputs: int, dropout: float) -> dict:
    import torchvision

    builder = torchvision.models.get_model_builder(name)
    cls = inspect.signature(builder).return_annotation
    accepts = inspect.signature(cls.__init__).parameters if inspect.isclass(cls) else {}
    kwargs = {"num_classes": num_outputs}
    if dropout:
        if "dropout" not in accepts:
            raise EdgekitError(f"model.dropout: {name} takes no dropout setting; leave it at 0")
        kwargs["dropout"] = dropout
    if "aux_logits" in accepts:
        kwargs["aux_logits"] = True
    if "init_weights" in accepts:
        kwargs["init_weights"] = True  # the documented init, without the FutureWarning
    if "image_size" in accepts and input_shape[1] == input_shape[2]:
        kwargs["image_size"] = input_shape[1]
    return kwargs


def _build(name: str, kwargs: dict, input_shape):
    import torchvision
    from torch import nn

    model = torchvision.models.get_model(name, weights=None, **kwargs)
    c, h, _ = input_shape
    small = h < SMALL_STEM_BELOW
    if small and isinstance(model, torchvision.models.ResNet):
        # CIFAR-style stem: 3x3 stride-1 conv, no max-pool: (B, C, 32, 32) -> (B, 64, 32, 32)
        model.conv1 = nn.Conv2d(c, model.conv1.out_channels, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    elif small and isinstance(model, torchvision.models.MobileNetV2):
        model.features[0][0].stride = (1, 1)
    first_name, first = next((n, m) for n, m in model.named_modules()
                             if isinstance(m, nn.Conv2d))
    if first.in_channels != c:  # grayscale (or any other channel count) in
        new = nn.Conv2d(c, first.out_channels, first.kernel_size, first.stride, first.padding,
                        first.dilation, first.groups, first.bias is not None,
                        device=first.weight.device)
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        if new.bias is not None:
            nn.init.zeros_(new.bias)
        parent, _, leaf = first_name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, new)
    return model


def _meta_forward(name: str, kwargs: dict, input_shape) -> str | None:
    """None if `name` runs on a (2, *input_shape) batch, else the error.

    In training mode when the model has auxiliary heads (they only run in training).
    """
    import warnings

    import torch

    try:
        with torch.device("meta"), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _build(name, kwargs, input_shape).train(bool(kwargs.get("aux_logits")))
            model(torch.empty(2, *input_shape))
    except (RuntimeError, ValueError, IndexError) as e:
        return one_line(e, 200)
    return None
