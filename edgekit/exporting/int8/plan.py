"""What the int8 formats (onnx-int8, torchscript-int8) share: the method and the layers kept fp32.

Static quantization (ranges calibrated on training data) for conv nets; dynamic quantization
(activation ranges measured at run time, weights int8) for models made of Linear/RNN/LSTM/GRU
layers, as onnxruntime's quantization guide ("Method selection": dynamic for RNNs and
transformers, static for CNNs) and PyTorch's quantization docs recommend. For conv nets dynamic
quantization re-measures every activation at run time and is slower than fp32 on onnxruntime's
CPU provider, so `auto` never picks it for a model with convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError

METHODS = ("auto", "static", "dynamic")


@dataclass(frozen=True)
class Int8Plan:
    """How the int8 artifacts of one export are made."""

    method: str  # "static" or "dynamic"
    why: str  # how the method was chosen, for the report
    exclude: tuple[str, ...]  # module names kept fp32 (as in model.named_modules())
    calibration_method: str  # "minmax", "entropy" or "percentile" (static only)
    calibration_samples: int
    # modules the automatic fallback (edgekit.exporting.int8.mixed) kept fp32 on top of `exclude`
    fallback_fp32: tuple[str, ...] = ()

    @property
    def fp32_modules(self) -> tuple[str, ...]:
        """Every module kept fp32: the user's and the fallback's."""
        return tuple(dict.fromkeys(self.exclude + self.fallback_fp32))

    def layout_suffix(self) -> str:
        """What the fallback changed, for a layout's name: "+fp32x2" ("" when nothing)."""
        return f"+fp32x{len(self.fallback_fp32)}" if self.fallback_fp32 else ""

    def to_dict(self) -> dict:
        out = {"method": self.method, "why": self.why, "exclude": list(self.exclude)}
        if self.method == "static":
            out["calibration"] = {"method": self.calibration_method,
                                  "samples": self.calibration_samples}
        return out


def choose_method(model, requested: str = "auto") -> tuple[str, str]:
    """Static or dynamic int8 for `model`, and why.

    Args:
        model: the nn.Module to quantize.
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


def check_exclude(model, names: tuple[str, ...]) -> tuple[str, ...]:
    """Validate `--int8-exclude` names against the model's module names.

    Raises:
        EdgekitError: a name that is not a module of the model, listing the valid ones.
    """
    if isinstance(model, Path):  # an imported ONNX file: its node names
        import onnx

        nodes = [n.name for n in onnx.load(str(model), load_external_data=False).graph.node]
        for name in names:
            if not any(n == name or n.startswith(name + "/") or f"/{name}/" in n
                       for n in nodes):
                shown = ", ".join(nodes[:12]) + (", ..." if len(nodes) > 12 else "")
                raise EdgekitError(f"--int8-exclude {name!r} is not a node of the ONNX "
                                   f"model; expected a node name such as: {shown}")
        return tuple(dict.fromkeys(names))
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules or name == "":
            leaves = [n for n, m in modules.items()
                      if n and any(True for _ in m.parameters(recurse=False))]
            shown = ", ".join(leaves[:12]) + (", ..." if len(leaves) > 12 else "")
            raise EdgekitError(f"--int8-exclude {name!r} is not a layer of the model; "
                               f"expected a module name such as: {shown}")
    return tuple(dict.fromkeys(names))
