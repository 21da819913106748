"""The torch int8 formats' variants for edgekit.exporting.int8.mixed's search: torchscript-int8
(torch.ao FX static, or dynamic) and pte-int8 (PT2E with XNNPACKQuantizer, static or dynamic).

What either format keeps fp32 is a module, by name, as `--int8-exclude` does (torch.ao's
`QConfigMapping.set_module_name(name, None)`, PT2E's quantizer filtering out the ops traced
inside it);
an op traced outside any module (a top-level `x + y`) has no name to keep it fp32 by: it is
ranked but never given back. Every variant is written by the format's own exporter (its
Int8Plan with `fallback_fp32` set) and checked by export's check. The calibrations to try:
torch.ao static has MinMaxObserver and HistogramObserver ("entropy" and "percentile" both map
to it); XNNPACKQuantizer's static config has one observer (HistogramObserver), with per-channel
weights (the targets' default) or per-tensor ones; dynamic int8 measures its ranges at run
time. The SQNR per module comes from
edgekit.exporting.int8.torch_sensitivity, on the same quantization made in this process.
"""

from __future__ import annotations

import copy
import importlib
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from uuid import uuid4

# Calibration label -> what it changes in the export's Int8Plan, per format and mode, the
# format's default first. XNNPACK's static config has one observer; its weights may also be
# per tensor (one scale a layer: what the target's per-channel default rounds differently),
# tried before any layer is given back to fp32 (one re-export against a search of several).
TORCH_AO = {"MinMaxObserver": {"calibration_method": "minmax"},
            "HistogramObserver": {"calibration_method": "entropy"}}
PER_TENSOR = "HistogramObserver, per-tensor weights"
CALIBRATIONS = {("torchscript-int8", "static"): TORCH_AO,
                ("pte-int8", "static"): {"HistogramObserver": {},
                                         PER_TENSOR: {"per_channel": False}},
                ("torchscript-int8", "dynamic"): {"dynamic": {}},
                ("pte-int8", "dynamic"): {"dynamic": {}}}


@dataclass
class Variants:
    """int8 artifacts of one torch format, module sets kept fp32, written and checked once."""

    fmt: object  # the catalog Format (torchscript-int8 or pte-int8)
    ctx: object  # export's ExportContext
    manifest: dict  # the candidate's embedded manifest
    check: object  # path -> export's verify row
    layout: str  # the candidate's layout name
    fp32_model: Path | None
    calibrations: dict  # label -> what it changes in the export's Int8Plan
    done: dict = field(default_factory=dict)
    hows: dict = field(default_factory=dict)  # key -> the layout dict the exporter wrote

    @property
    def methods(self) -> tuple[str, ...]:
        """The calibration labels to try, the format's default first."""
        return tuple(self.calibrations)

    def layout_of(self, method: str) -> str:
        """The name the exporter gave the full int8 artifact of `method` (per-tensor weights
        change it: "pt2e-xnnpack-static" against "pt2e-xnnpack-static-pc")."""
        return self.info(method, ()).get("name", self.layout)

    def get(self, method: str, fp32: tuple[str, ...] = ()) -> tuple[Path, dict]:
        """The checked artifact calibrated by `method` with the modules `fp32` kept fp32."""
        key = (method, tuple(sorted(fp32)))
        if key not in self.done:
            ctx = copy.copy(self.ctx)
            ctx.int8 = self.plan(method, key[1])
            folder = self.ctx.candidates / f"fallback-{self.fmt.name}"
            folder.mkdir(parents=True, exist_ok=True)
            stem, suffix = self.fmt.file.rsplit(".", 1)
            path = folder / f"{stem}.{uuid4().hex[:8]}.{suffix}"
            exporter = importlib.import_module(self.fmt.exporter)
            [(path, how)] = exporter.write(ctx, path, self.manifest)
            self.done[key], self.hows[key] = (Path(path), self.check(Path(path))), how
        return self.done[key]

    def plan(self, method: str, fp32: tuple[str, ...]):
        """The export's Int8Plan with calibration `method` and the modules `fp32` kept fp32."""
        return replace(self.ctx.int8, fallback_fp32=tuple(fp32),
                       **self.calibrations.get(method, {}))

    def info(self, method: str, fp32: tuple[str, ...]) -> dict:
        """The layout dict the exporter wrote for `get(method, fp32)`."""
        self.get(method, fp32)
        return self.hows[(method, tuple(sorted(fp32)))]

    def mixed(self, path: Path) -> bool:
        """Whether `path` (made or seeded here) keeps modules fp32 for the fallback."""
        return any(p == path and self.hows.get(k, {}).get("fp32_modules")
                   for k, (p, _) in self.done.items())

    def unranked(self, layers: list[dict]) -> list[str]:
        """Modules without a row that may still quantize something: torch.ao's table has
        quantized modules only, not an op a module's forward calls (a residual `x + y`), and
        keeping a module fp32 keeps its ops fp32. Leaves first (model order), then
        containers, deepest first; never the model itself, nor what the user excluded."""
        ranked = {r["node"] for r in layers} | set(self.ctx.int8.exclude)
        names = [n for n, _ in self.ctx.model.named_modules() if n and n not in ranked]
        children = {n for n, m in self.ctx.model.named_modules() if n and any(m.children())}
        leaves = [n for n in names if n not in children]
        return leaves + sorted(set(names) - set(leaves), key=lambda n: -n.count("."))

    def sqnr(self, method: str, int8: Path) -> list[dict]:
        """Every quantized module's SQNR rows, worst first, of the full int8 model calibrated
        by `method`: the same quantization as the artifact, made again in this process
        (`int8` itself is a lowered program or a frozen script the analysis cannot open)."""
        from edgekit.exporting.int8 import torch_sensitivity as ts
        from edgekit.exporting.int8.mixed import SQNR_SAMPLES

        ctx, plan = self.ctx, self.plan(method, ())
        inputs = ts.batches(ctx.example, ctx.calibration, SQNR_SAMPLES)
        if self.fmt.name == "pte-int8":
            from edgekit.exporting.formats.pte_int8 import per_channel, quantize_pt2e

            converted = quantize_pt2e(ctx.model, ctx.example, ctx.calibration, plan.method,
                                      per_channel(ctx, plan), plan.fp32_modules, fold=False,
                                      memo=getattr(ctx, "memo", None))
            layers = ts.pt2e_layer_sqnr(converted, inputs)
        else:
            layers = _torch_ao_sqnr(ctx, plan, inputs)
        return [layer.to_dict() for layer in layers]


def _torch_ao_sqnr(ctx, plan, inputs) -> list:
    from torch.ao.quantization.quantize_fx import convert_fx

    from edgekit.exporting.formats.torchscript_int8 import (
        engine_for,
        observe_fx,
        quantize_dynamic,
        quantized_engine,
    )
    from edgekit.exporting.int8 import torch_sensitivity as ts

    engine = engine_for(ctx.target)
    with quantized_engine(engine), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        if plan.method == "dynamic":
            return ts.module_sqnr(ctx.model, quantize_dynamic(ctx.model, plan.fp32_modules),
                                  inputs)
        observed, _ = observe_fx(ctx.model, ctx.example, ctx.calibration, engine,
                                 plan.calibration_method, plan.fp32_modules,
                                 getattr(ctx, "memo", None))
        return ts.module_sqnr(observed, convert_fx(copy.deepcopy(observed)), inputs)


def variants(ctx, cands: list, check, metric: str):
    """mixed.rescue's hook: (Variants, calibration label, (path, row)) of the failed
    candidate (the torch formats write one)."""
    c = cands[0]
    v, label, key = make(ctx, c, check)
    first = (c.path, c.check.row(metric))
    v.done[key], v.hows[key] = first, c.how
    return v, label, first


def table(ctx, c, check, metric: str, fixed: dict | None) -> dict:
    """mixed.table's hook: the published artifact's per-layer table (static and dynamic)."""
    from edgekit.exporting.int8.mixed import sensitivity

    v, label, key = make(ctx, c, check)
    v.done[key], v.hows[key] = (c.path, c.check.row(metric)), c.how
    out = sensitivity(ctx, v, label, c.path, fixed)
    out["layout"] = c.how.get("name", v.layout)
    return out


def make(ctx, c, check) -> tuple[Variants, str, tuple]:
    """The Variants of candidate `c`, its calibration label and its key in `done`."""
    from edgekit import formats as catalog
    from edgekit.exporting.formats.pte_int8 import per_channel
    from edgekit.runtime import load

    calibrations = dict(CALIBRATIONS[(c.fmt.name, ctx.int8.method)])
    if PER_TENSOR in calibrations and not per_channel(ctx):  # per tensor already
        del calibrations[PER_TENSOR]
    label = _label(c.how, calibrations)
    twin = next((f for f in catalog.formats()
                 if f.format == c.fmt.format and f.precision == "fp32"), None)
    base = c.how.get("name", "").split("+fp32x")[0]
    v = Variants(c.fmt, ctx, load(c.path).manifest, check, base,
                 ctx.stage / twin.file if twin else None, calibrations)
    return v, label, (label, tuple(sorted(c.how.get("fp32_modules", ()))))


def _label(how: dict, calibrations: dict) -> str:
    """The calibration label an artifact was made with: its observer (torch.ao), the label
    whose plan changes its layout shows (per-tensor weights), else the format's default."""
    if how.get("observer") in calibrations:
        return how["observer"]
    return next((k for k, change in calibrations.items()
                 if change and all(how.get(f) == v for f, v in change.items())),
                next(iter(calibrations)))
