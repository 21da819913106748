"""What the int8 formats (onnx-int8, torchscript-int8) share: the method and the layers kept fp32.

The method (static or dynamic) is chosen by edgekit.int8_method.choose_method, which QAT reads
too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError


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
    # int8 weights per channel (True) or per tensor (False); None: the target's scheme and
    # the recipe decide (the .pte search tries per-tensor weights as another calibration)
    per_channel: bool | None = None

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
