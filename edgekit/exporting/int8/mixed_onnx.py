"""The int8 ONNX artifact's variants for edgekit.exporting.int8.mixed's search (static layouts only:
dynamic int8 has no calibrated ranges to search and no Q/DQ pairs to measure).

Every variant is a real artifact written by edgekit.exporting.formats.onnx_int8.quantize_onnx (the
layers
kept fp32 are its nodes_to_exclude, as `--int8-exclude` does) in the layout of the target's
candidate; the SQNR per node comes from edgekit.exporting.int8.sensitivity.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from uuid import uuid4

import numpy as np

from edgekit.exporting.int8.scheme import Scheme

METHODS = ("minmax", "entropy", "percentile")


@dataclass
class Variants:
    """int8 models of one fp32 model in one layout, written and checked once each."""

    fmt: object  # the catalog's onnx-int8 Format
    prepped: Path  # the fp32 model after quant_pre_process
    folder: Path
    scheme: Scheme
    calibration: np.ndarray
    manifest: dict  # the embedded manifest of the target's int8 candidate
    check: object  # path -> export's verify row
    exclude: tuple[str, ...] = ()  # nodes the user keeps fp32 (--int8-exclude)
    fp32_model: Path | None = None
    methods: tuple[str, ...] = METHODS
    done: dict = field(default_factory=dict)

    @property
    def layout(self) -> str:
        """The layout's name for the report ("qdq-s8s8-pc")."""
        return self.scheme.name

    def layout_of(self, method: str) -> str:
        """The scheme's name: the method is named beside it (kept_method)."""
        return self.layout

    def get(self, method: str, fp32: tuple[str, ...] = ()) -> tuple[Path, dict]:
        """The checked int8 model calibrated by `method` with the nodes `fp32` kept fp32."""
        from edgekit.exporting.formats.onnx_int8 import quantize_onnx

        key = (method, tuple(sorted(fp32)))
        if key not in self.done:
            # Unique: several Variants share the folder, and a chosen file is moved out of it.
            path = self.folder / f"model.int8.{self.scheme.name}.{method}.{uuid4().hex[:8]}.onnx"
            info = self.info(method, key[1])
            own = {**self.manifest, "artifact": {**self.manifest["artifact"], "layout": info}}
            quantize_onnx(self.prepped, path, self.scheme, self.calibration, method,
                          info["excluded_nodes"], own, self.folder / f"calibration.{method}.json")
            self.done[key] = (path, self.check(path))
        return self.done[key]

    def info(self, method: str, fp32: tuple[str, ...]) -> dict:
        """The layout dict of the model `get(method, fp32)` writes."""
        return {**self.scheme.to_dict(), "name": _name(self.scheme, method, fp32),
                "calibration_method": method, "fp32_nodes": list(fp32),
                "excluded_nodes": sorted({*self.exclude, *fp32})}

    def mixed(self, path: Path) -> bool:
        """Whether the int8 model at `path` keeps nodes fp32 for the fallback."""
        return bool(_embedded(path)["artifact"].get("layout", {}).get("fp32_nodes"))

    def unranked(self, layers: list[dict]) -> list[str]:
        """Nothing: every quantized node has a row."""
        return []

    def sqnr(self, method: str, int8: Path) -> list[dict]:
        """Every quantized node's SQNR rows (edgekit.exporting.int8.sensitivity), worst first."""
        from edgekit.exporting.int8.mixed import SQNR_SAMPLES
        from edgekit.exporting.int8.sensitivity import layer_sqnr

        qdq = int8
        if self.scheme.form != "qdq":  # SQNR reads Q/DQ pairs: the same ranges as QDQ
            twin = Variants(self.fmt, self.prepped, self.folder, replace(self.scheme, form="qdq"),
                            self.calibration, self.manifest, lambda p: {}, self.exclude)
            qdq = twin.get(method)[0]
        x = self.calibration[:SQNR_SAMPLES].astype(np.float32)
        return [layer.to_dict() for layer in layer_sqnr(self.prepped, qdq, x)]


def variants(ctx, cands: list, check, metric: str):
    """mixed.rescue's hook: (Variants, method, (path, row)) of the failed static candidate in
    the target's documented layout, or None when every candidate is dynamic int8."""
    static = [c for c in cands if c.how.get("mode") == "static"]
    if not static:
        return None
    c = static[0]
    return (make(ctx, c.path, c.how, check, c.fmt),
            c.how.get("calibration_method", ctx.int8.calibration_method),
            (c.path, c.check.row(metric)))


def table(ctx, c, check, metric: str, fixed: dict | None) -> dict | None:
    """mixed.table's hook: the published model.int8.onnx's per-layer table (static; for
    dynamic int8, why there is none)."""
    from edgekit.exporting.int8.mixed import sensitivity

    if c.how.get("mode") != "static":
        return {"format": c.fmt.name, "layout": c.how.get("name", ""), "layers": [],
                "why_no_table": "dynamic int8 ONNX quantizes activations at run time "
                "(DynamicQuantizeLinear), so it has no calibrated Q/DQ pairs to compare "
                "layer by layer, and no ranges a search could change"}
    v = make(ctx, c.path, c.how, check, c.fmt)
    method = c.how.get("calibration_method", ctx.int8.calibration_method)
    if not c.how.get("fp32_nodes"):
        v.done[(method, ())] = (c.path, c.check.row(metric))
    out = sensitivity(ctx, v, method, c.path, fixed)
    out["layout"] = c.how.get("name", v.layout)
    return out


def make(ctx, path: Path, info: dict, check, fmt) -> Variants:
    """A Variants over the stage's model.onnx in the layout of candidate `path`."""
    from onnxruntime.quantization import quant_pre_process

    folder = ctx.candidates / "fallback"
    prepped = folder / "model.pre.onnx"
    if not prepped.is_file():
        folder.mkdir(exist_ok=True)
        quant_pre_process(str(ctx.stage / "model.onnx"), str(prepped), skip_symbolic_shape=True)
    # The ranges onnx_int8.write measured on the same inputs and graph (its calibrator reads
    # every tensor, excluded nodes' too): the variants of its method read them, not calibrate
    # again (resnet18 at 224 px: 256 images through onnxruntime with every tensor an output).
    seed, mine = (ctx.candidates / "calibration.json",
                  folder / f"calibration.{ctx.int8.calibration_method}.json")
    if seed.is_file() and not mine.exists():
        shutil.copyfile(seed, mine)
    names = {f.name for f in fields(Scheme)}
    scheme = Scheme(**{k: val for k, val in info.items() if k in names})
    return Variants(fmt, prepped, folder, scheme, ctx.calibration, _embedded(path), check,
                    tuple(n for n in info.get("excluded_nodes", ())
                          if n not in info.get("fp32_nodes", ())),
                    ctx.stage / "model.onnx")


def _embedded(path: Path) -> dict:
    import onnx

    from edgekit.manifest import EMBED_KEY

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False)
             .metadata_props}
    return json.loads(props[EMBED_KEY])


def _name(layout: Scheme, method: str, fp32) -> str:
    """Layout name + what the fallback changed: "qdq-u8s8-pc+entropy+fp32x2"."""
    return layout.name + ("" if method == "minmax" else f"+{method}") + (
        f"+fp32x{len(fp32)}" if fp32 else "")
