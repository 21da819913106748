"""Which int8 a model takes, static or dynamic, from its layers: read by export and by QAT.

Static quantization (ranges calibrated on training data) for conv nets; dynamic quantization
(activation ranges measured at run time, weights int8) for models made of Linear/RNN/LSTM/GRU
layers, as onnxruntime's quantization guide ("Method selection": dynamic for RNNs and
transformers, static for CNNs) and PyTorch's quantization docs recommend. For conv nets dynamic
quantization re-measures every activation at run time and is slower than fp32 on onnxruntime's
CPU provider, so `auto` never picks it for a model with convolutions. Below both the export
pipeline (edgekit.exporting.int8.plan) and quantization-aware training (edgekit.qat).
"""

from __future__ import annotations

from edgekit.errors import EdgekitError

METHODS = ("auto", "static", "dynamic")


def choose_method(model, requested: str = "auto") -> tuple[str, str]:
    """Static or dynamic int8 for `model`, and why.

    Args:
        model: the nn.Module to quantize.
        requested: "auto" (decide from the layers), "static" or "dynamic".

    Raises:
        EdgekitError: `requested` is not one of METHODS.
    """
    from torch import nn

    if requested not in METHODS:
        raise EdgekitError(f"--int8-method {requested!r}; expected one of: {', '.join(METHODS)}")
    if requested != "auto":
        return requested, f"{requested} (asked for)"
    kinds = {type(m).__name__ for m in model.modules()}
    convs = sorted(k for k in kinds if k.startswith(("Conv", "LazyConv")))
    if convs:
        return "static", f"static (auto: the model has {', '.join(convs)} layers)"
    seq = (nn.Linear, nn.RNNBase, nn.RNNCellBase, nn.Embedding, nn.EmbeddingBag)
    if any(isinstance(m, seq) for m in model.modules()):
        found = sorted({type(m).__name__ for m in model.modules() if isinstance(m, seq)})
        return "dynamic", (f"dynamic (auto: no convolutions; made of {', '.join(found)} layers, "
                           "whose activations dynamic quantization measures at run time)")
    return "static", "static (auto: no convolution, linear or recurrent layers found)"
