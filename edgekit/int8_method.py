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

from pathlib import Path

from edgekit.errors import EdgekitError

METHODS = ("auto", "static", "dynamic")


def choose_method(model, requested: str = "auto") -> tuple[str, str]:
    """Static or dynamic int8 for `model`, and why.

    Args:
        model: the nn.Module to quantize, or the path of an imported ONNX file.
        requested: "auto" (decide from the layers), "static" or "dynamic".

    Raises:
        EdgekitError: `requested` is not one of METHODS.
    """
    if requested not in METHODS:
        raise EdgekitError(f"--int8-method {requested!r}; expected one of: {', '.join(METHODS)}")
    if requested != "auto":
        return requested, f"{requested} (asked for)"
    if isinstance(model, Path):  # an imported ONNX file: the same rule over its operators
        return _onnx_method(model)
    from torch import nn

    kinds = {type(m).__name__ for m in model.modules()}
    # A torch.export program (an imported .pt2) keeps operators, not layer classes.
    ops = {str(n.target) for m in model.modules() if hasattr(m, "graph")
           for n in m.graph.nodes if n.op == "call_function"}
    kinds |= {"Conv2d" for op in ops if "conv" in op} | {"Linear" for op in ops if "linear" in op}
    convs = sorted(k for k in kinds if k.startswith(("Conv", "LazyConv")))
    if convs:
        return "static", f"static (auto: the model has {', '.join(convs)} layers)"
    seq = (nn.Linear, nn.RNNBase, nn.RNNCellBase, nn.Embedding, nn.EmbeddingBag)
    if any(isinstance(m, seq) for m in model.modules()) or "Linear" in kinds:
        found = sorted({type(m).__name__ for m in model.modules() if isinstance(m, seq)}
                       | (kinds & {"Linear"}))
        return "dynamic", (f"dynamic (auto: no convolutions; made of {', '.join(found)} layers, "
                           "whose activations dynamic quantization measures at run time)")
    return "static", "static (auto: no convolution, linear or recurrent layers found)"


def _onnx_method(path: Path) -> tuple[str, str]:
    import onnx

    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    convs = sorted(ops & {"Conv", "ConvTranspose"})
    if convs:
        return "static", f"static (auto: the ONNX graph has {', '.join(convs)} operators)"
    seq = sorted(ops & {"MatMul", "Gemm", "LSTM", "GRU", "RNN", "Gather"})
    if seq:
        return "dynamic", (f"dynamic (auto: no convolutions; made of {', '.join(seq)} "
                           "operators, whose activations dynamic quantization measures at run "
                           "time)")
    return "static", "static (auto: no convolution, linear or recurrent operators found)"
