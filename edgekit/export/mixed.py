"""int8 that keeps its accuracy: per-layer sensitivity, calibration search, mixed precision.

For the ONNX int8 artifact (static layouts; dynamic int8 has no calibrated ranges to search):

    sensitivity   every quantized layer's SQNR (edgekit.export.sensitivity), then, for the
                  TOP_K lowest, the held-out score with that layer alone kept fp32
    fallback      when no int8 candidate passes the gate: first the calibration methods
                  (minmax, entropy, percentile; the best passing one is kept), then layers given
                  back to fp32 in sensitivity order, as few as pass max_int8_drop: the shortest
                  passing prefix of the ranking, then each of its layers dropped again if the
                  model still passes without it

Every variant is a real artifact written by edgekit.export.onnx_int8.quantize_onnx (the
layers kept fp32 are its nodes_to_exclude, as `--int8-exclude` does) and checked by export's
own `check(path) -> row` on the held-out split, so the gate that passes it is the usual one.
The search chooses on the same held-out split the gate reads: the report says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from uuid import uuid4

import numpy as np

from edgekit.quant import Scheme

METHODS = ("minmax", "entropy", "percentile")
TOP_K = 8  # layers re-quantized with that layer alone fp32 (one artifact + check each)
SQNR_SAMPLES = 64  # calibration inputs the SQNR pass reads


@dataclass
class Variants:
    """int8 models of one fp32 model in one layout, written and checked once each."""

    prepped: Path  # the fp32 model after quant_pre_process
    folder: Path
    layout: Scheme
    calibration: np.ndarray
    manifest: dict  # the embedded manifest of the target's int8 candidate
    check: object  # path -> export's verify row
    exclude: tuple[str, ...] = ()  # nodes the user keeps fp32 (--int8-exclude)
    done: dict = field(default_factory=dict)

    def get(self, method: str, fp32: tuple[str, ...] = ()) -> tuple[Path, dict]:
        """The checked int8 model calibrated by `method` with the nodes `fp32` kept fp32."""
        from edgekit.export.onnx_int8 import quantize_onnx

        key = (method, tuple(sorted(fp32)))
        if key not in self.done:
            # Unique: several Variants share the folder, and a chosen file is moved out of it.
            path = self.folder / f"model.int8.{self.layout.name}.{method}.{uuid4().hex[:8]}.onnx"
            info = {**self.layout.to_dict(), "name": _name(self.layout, method, fp32),
                    "calibration_method": method, "fp32_nodes": list(key[1]),
                    "excluded_nodes": sorted({*self.exclude, *fp32})}
            own = {**self.manifest, "artifact": {**self.manifest["artifact"], "layout": info}}
            quantize_onnx(self.prepped, path, self.layout, self.calibration, method,
                          info["excluded_nodes"], own, self.folder / f"calibration.{method}.json")
            self.done[key] = (path, self.check(path))
        return self.done[key]


def fallback(ctx, failed: list[tuple[Path, dict, dict]], check, budget: float = 0.0):
    """Make an int8 ONNX model that passes the gate, when none of the candidates did.

    Args:
        ctx: export's ExportContext (stage with model.onnx, calibration, target, int8 plan).
        failed: (file, layout dict, verify row) of every onnx-int8 candidate, none passing.
        check: path -> verify row (export's held-out check, the same gate).
        budget: seconds of timing per artifact when the target is this machine (0: none).

    Returns:
        ([(file, layout dict, row)] of the passing model, or [] if none was found, report
        section): the section has the calibration tries, the ranked layers, the layers kept
        fp32 and the accuracy, size and latency against full int8 and fp32.
    """
    static = [(p, info, row) for p, info, row in failed if info.get("mode") == "static"]
    if not static or any(row["passed"] for _, _, row in failed):
        return [], None
    path, info, row = static[0]  # the target's documented layout
    v = _variants(ctx, path, info, check)
    tries = {ctx.int8.calibration_method: (path, row)}
    for method in METHODS:
        if method not in tries:
            tries[method] = v.get(method)
    calibration = [{"method": m, "accuracy": r["score"],
                    "drop_points": r["accuracy_drop_points"], "passed": r["passed"]}
                   for m, (_, r) in tries.items()]
    best = min(tries, key=lambda m: (not tries[m][1]["passed"],
                                     tries[m][1]["accuracy_drop_points"]))
    section = {"layout": v.layout.name, "calibration": calibration, "kept_method": best}
    if tries[best][1]["passed"]:
        section["fp32_layers"] = []
        made = [(tries[best][0], _info(v, best, ()), tries[best][1])]
        return made, _finish(section, v, ctx, best, (), tries, budget)
    layers = ranked_layers(v, best, tries[best][0])
    section["layers"] = layers
    fp32, steps = fewest_fp32_layers(v, best, [r["node"] for r in layers])
    section["steps"] = steps
    section["models_tried"] = len(v.done)
    if fp32 is None:
        section["fp32_layers"] = None
        section["why"] = "still fails with every quantized layer in fp32"
        return [], _finish(section, v, ctx, best, None, tries, budget)
    out_path, out_row = v.get(best, fp32)
    return [(out_path, _info(v, best, fp32), out_row)], \
        _finish(section, v, ctx, best, fp32, tries, budget)


def sensitivity(ctx, chosen: list[tuple[Path, dict, dict]], check,
                fixed: dict | None = None) -> dict | None:
    """The int8 ONNX artifact's per-layer table (report.json's "int8_accuracy"), and its chart.

    Args:
        ctx: export's ExportContext; the chart is written to ctx.stage / "sensitivity.png".
        chosen: (file, layout dict, verify row) of the published model.int8.onnx (or []).
        check: path -> verify row.
        fixed: what `fallback` returned, if it ran: its ranking is reused.

    Returns:
        {"layout", "calibration_method", "top_k", "layers", "fallback", "chart"}, or None
        without a static int8 ONNX artifact (dynamic int8 has no calibrated ranges).
    """
    from edgekit.export.int8_report import chart

    if not chosen or chosen[0][1].get("mode") != "static":
        return None
    path, info, row = chosen[0]
    method = info.get("calibration_method", ctx.int8.calibration_method)
    if fixed and fixed.get("layers"):
        layers = fixed["layers"]
    else:
        v = _variants(ctx, path, info, check)
        if info.get("fp32_nodes"):  # a mixed model: rank the layers of its full int8 twin
            path, row = v.get(method)
        try:
            layers = ranked_layers(v, method, path, row)
        except Exception as e:  # noqa: BLE001 - a graph the analysis cannot read: the export
            # itself passed its gate, so report why the table is missing instead of failing it
            return {"layout": info.get("name", ""), "calibration_method": method,
                    "layers": [], "fallback": fixed, "error": f"{type(e).__name__}: {e}"[:300]}
    out = {"layout": info.get("name", ""), "calibration_method": method, "top_k": TOP_K,
           "layers": layers, "fallback": fixed}
    if layers:
        chart(layers, [n["node"] for n in (fixed or {}).get("fp32_layers") or []],
              ctx.stage / "sensitivity.png")
        out["chart"] = "sensitivity.png"
    return out


def ranked_layers(v: Variants, method: str, int8: Path, row: dict | None = None) -> list[dict]:
    """Quantized layers of `int8`, most harmful first, as report rows.

    SQNR for every layer (the layer alone against fp32, and in the model); for the TOP_K
    lowest, the held-out drop with that layer alone kept fp32 and the points that recovers.
    Order: layers by points recovered (measured ones), then by SQNR.
    """
    from edgekit.export.sensitivity import layer_sqnr

    base = row or v.get(method)[1]
    qdq = int8
    if v.layout.form != "qdq":  # SQNR reads Q/DQ pairs: the same ranges as QDQ
        twin = Variants(v.prepped, v.folder, _as_qdq(v.layout), v.calibration, v.manifest,
                        lambda p: {}, v.exclude)
        qdq = twin.get(method)[0]
    x = v.calibration[:SQNR_SAMPLES].astype(np.float32)
    rows = [layer.to_dict() for layer in layer_sqnr(v.prepped, qdq, x)]
    for r in rows[:TOP_K]:
        alone = v.get(method, (r["node"],))[1]
        r["drop_if_fp32"] = alone["accuracy_drop_points"]
        r["recovered_points"] = round(base["accuracy_drop_points"] - r["drop_if_fp32"], 4)
    rows.sort(key=lambda r: -r.get("recovered_points", float("-inf")))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def fewest_fp32_layers(v: Variants, method: str, order: list[str]):
    """The fewest layers of `order` (most sensitive first) to keep fp32 so the model passes.

    The shortest passing prefix (doubling, then bisection: each probe is one artifact and
    check), then each layer of it removed again, least sensitive first, if the model still
    passes without it.

    Args:
        v: the Variants to write and check models with.
        method: the calibration method of every model tried.
        order: node names, most sensitive first.

    Returns:
        (the nodes to keep fp32, or None when even all of `order` fails; the probes made,
        each {"fp32_layers", "drop_points", "passed"}).
    """
    steps = []

    def passes(nodes) -> bool:
        row = v.get(method, tuple(nodes))[1]
        steps.append({"fp32_layers": len(nodes), "drop_points": row["accuracy_drop_points"],
                      "passed": row["passed"]})
        return row["passed"]

    n, hi = len(order), 1
    while hi < n and not passes(order[:hi]):
        hi *= 2
    hi = min(hi, n)
    if not passes(order[:hi]):
        return None, steps
    lo = hi // 2  # order[:lo] failed (or lo == 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if passes(order[:mid]) else (mid, hi)
    kept = list(order[:hi])
    for node in reversed(order[:hi]):
        if len(kept) > 1 and passes([k for k in kept if k != node]):
            kept.remove(node)
    return tuple(kept), steps


def _finish(section: dict, v: Variants, ctx, method: str, fp32, tries: dict,
            budget: float) -> dict:
    """Accuracy, size and latency of the result against full int8 and fp32."""
    full_path, full_row = tries[method]
    fp32_model = ctx.stage / "model.onnx"
    section["full_int8"] = {"bytes": full_path.stat().st_size,
                            "drop_points": full_row["accuracy_drop_points"]}
    section["fp32_bytes"] = fp32_model.stat().st_size
    if fp32 is None:
        return section
    path, row = v.get(method, fp32)
    modules = {r["node"]: r["module"] for r in section.get("layers", [])}
    section.update({"fp32_layers": [{"node": n, "module": modules.get(n, "")} for n in fp32],
                    "accuracy": row["score"], "drop_points": row["accuracy_drop_points"],
                    "bytes": path.stat().st_size})
    section["latency_ms"] = _latency(ctx, {"mixed": path, "full_int8": full_path,
                                           "fp32": fp32_model}, budget)
    return section


def _latency(ctx, paths: dict[str, Path], budget: float) -> dict | None:
    """Median batch-1 latency of each model here, or None when the target is elsewhere."""
    if not ctx.target.tune or budget <= 0:
        return None
    from edgekit.export.tune import time_artifacts
    from edgekit.machine import usable_cores

    times = time_artifacts(list(paths.values()), ctx.calibration[:1].astype(np.float32),
                           threads=usable_cores(), budget_s=budget)
    return {k: round(times[p]["ms"], 4) for k, p in paths.items()}


def _variants(ctx, path: Path, info: dict, check) -> Variants:
    """A Variants over the stage's model.onnx in the layout of candidate `path`."""
    from onnxruntime.quantization import quant_pre_process

    folder = ctx.candidates / "fallback"
    prepped = folder / "model.pre.onnx"
    if not prepped.is_file():
        folder.mkdir(exist_ok=True)
        quant_pre_process(str(ctx.stage / "model.onnx"), str(prepped), skip_symbolic_shape=True)
    names = {f.name for f in fields(Scheme)}
    layout = Scheme(**{k: val for k, val in info.items() if k in names})
    return Variants(prepped, folder, layout, ctx.calibration, _embedded(path), check,
                    tuple(n for n in info.get("excluded_nodes", ())
                          if n not in info.get("fp32_nodes", ())))


def _embedded(path: Path) -> dict:
    import onnx

    from edgekit.manifest import EMBED_KEY

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False)
             .metadata_props}
    return json.loads(props[EMBED_KEY])


def _info(v: Variants, method: str, fp32: tuple[str, ...]) -> dict:
    return {**v.layout.to_dict(), "name": _name(v.layout, method, fp32),
            "calibration_method": method, "fp32_nodes": list(fp32),
            "excluded_nodes": sorted({*v.exclude, *fp32})}


def _name(layout: Scheme, method: str, fp32) -> str:
    """Layout name + what the fallback changed: "qdq-u8s8-pc+entropy+fp32x2"."""
    return layout.name + ("" if method == "minmax" else f"+{method}") + (
        f"+fp32x{len(fp32)}" if fp32 else "")


def _as_qdq(layout: Scheme) -> Scheme:
    from dataclasses import replace

    return replace(layout, form="qdq")


class Checker:
    """path -> the report row of export's own check (the same gate), keeping each Check."""

    def __init__(self, fmt, held, gate):
        self.fmt, self.held, self.gate, self.checks = fmt, held, gate, {}

    def __call__(self, path: Path) -> dict:
        from edgekit.export.check import check_artifact

        self.checks[path] = check_artifact(path, self.fmt, self.held, self.gate)
        return self.checks[path].row(self.held.task.metric)


def rescue(ctx, cands: list, checker: Checker, budget: float) -> tuple[list, dict | None]:
    """Export's hook: when no int8 ONNX candidate passed, the candidate `fallback` makes.

    Returns:
        (new edgekit.export.choose.Candidate list, the report section or None).
    """
    from edgekit.export.choose import Candidate

    onnx8 = [c for c in cands if c.fmt is checker.fmt]
    if not onnx8:
        return [], None
    rows = [(c.path, c.how, c.check.row(checker.held.task.metric)) for c in onnx8]
    made, fixed = fallback(ctx, rows, checker, budget)
    return [Candidate(checker.fmt, p, info, checker.checks[p]) for p, info, _ in made], fixed


def table(ctx, chosen: list, checker: Checker, fixed: dict | None) -> dict | None:
    """Export's hook: the published int8 ONNX artifact's per-layer table and chart."""
    mine = [(c.path, c.how, c.check.row(checker.held.task.metric)) for c in chosen
            if c.fmt is checker.fmt]
    return sensitivity(ctx, mine, checker, fixed) if mine else None
