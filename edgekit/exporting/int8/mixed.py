"""int8 that keeps its accuracy: per-layer sensitivity, calibration search, mixed precision.

One search for every int8 format; what differs per format is how a variant is made (its
`Variants`: edgekit.exporting.int8.mixed_onnx for onnx-int8, edgekit.exporting.int8.mixed_torch for
torchscript-int8 and pte-int8):

    sensitivity   every quantized layer's SQNR against fp32, then, for the TOP_K lowest, the
                  held-out score with that layer alone kept fp32
    fallback      when no candidate of an int8 format passes the gate: first the calibration
                  methods the format has (the best passing one is kept), then layers given back
                  to fp32 in sensitivity order, as few as pass max_int8_drop: the shortest
                  passing prefix of the ranking, then each of its layers dropped again if the
                  model still passes without it

The `Variants` protocol below is what the search needs of a format; the catalog names each
int8 format's module (edgekit.formats: `search`, `chart`). The search chooses on the same
held-out split the gate reads: the report says so.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

TOP_K = 8  # layers re-quantized with that layer alone fp32 (one artifact + check each)
# The same for the table of an artifact that passed its gate, by format: an ONNX variant is a
# re-quantization (seconds), a torch one a whole re-export (a .pte of VGG: ~30 s), so those
# measure their drops only when the search runs (it needs them to choose).
TABLE_TOP_K = {"onnx-int8": TOP_K}
# Formats whose variant is cheap (a re-quantization): their search measures the TOP_K drops
# and prunes the passing prefix layer by layer. The others (a whole re-export each: resnet18's
# .pte ~30 s) rank by SQNR alone, computed on the quantization made once in this process, and
# prune the shortest passing prefix (doubling, then bisection) only when it has at most
# COSTLY_PRUNE_MAX layers (one export each); a longer one is bisected to within an eighth and
# kept (resnet18 .pte at 224 px: 45 exports and 54 min before).
CHEAP_VARIANTS = ("onnx-int8",)
COSTLY_PRUNE_MAX = 8
SKIPPED = ("not measured: each layer would be a whole re-export of the model; the layers are "
           "ranked by SQNR")
SQNR_SAMPLES = 64  # calibration inputs the SQNR pass reads


@runtime_checkable
class Variants(Protocol):
    """How the search makes and checks variants of one format's int8 artifact
    (edgekit.exporting.int8.mixed_onnx.Variants, edgekit.exporting.int8.mixed_torch.Variants)."""

    fmt: Any  # the catalog Format
    fp32_model: Path | None  # the fp32 artifact of the family, or None
    done: dict  # (method, fp32 layers) -> (path, check row) of what it made

    @property
    def layout(self) -> str:
        """The layout's name, for the report."""

    @property
    def methods(self) -> tuple[str, ...]:
        """The calibrations to try."""

    def layout_of(self, method: str) -> str:
        """The layout's name for the variants calibrated by `method`."""

    def get(self, method: str, fp32: tuple[str, ...] = ()) -> tuple[Path, dict]:
        """A real artifact written by the format's own exporter with the layers `fp32` kept
        fp32, checked by export's own check on the held-out split: (path, check row)."""

    def info(self, method: str, fp32: tuple[str, ...]) -> dict:
        """The layout dict of that variant."""

    def mixed(self, path: Path) -> bool:
        """Whether `path` keeps layers fp32 (its ranking is read from its full int8 twin)."""

    def sqnr(self, method: str, int8: Path) -> list[dict]:
        """Every quantized layer's SQNR against fp32, one row each."""

    def unranked(self, layers: list[dict]) -> list[str]:
        """What else can be kept fp32, tried after the ranked layers."""


def fallback(ctx, v: Variants, start: str, first: tuple[Path, dict], budget: float = 0.0):
    """Make an int8 model that passes the gate from a candidate that did not.

    Args:
        ctx: export's ExportContext (calibration, target).
        v: the format's Variants.
        start: the calibration method of the failed candidate `first` (path, verify row).
        budget: seconds of timing per artifact when the target is this machine (0: none).

    Returns:
        ([(file, layout dict, row)] of the passing model, or [] if none was found, report
        section): the section has the calibration tries, the ranked layers, the layers kept
        fp32 and the accuracy, size and latency against full int8 and fp32.
    """
    v.done.setdefault((start, ()), first)
    tries = {start: first}
    for method in v.methods:
        if method not in tries:
            tries[method] = v.get(method)
    calibration = [{"method": m, "accuracy": r["score"],
                    "drop_points": r["accuracy_drop_points"], "passed": r["passed"]}
                   for m, (_, r) in tries.items()]
    best = min(tries, key=lambda m: (not tries[m][1]["passed"],
                                     tries[m][1]["accuracy_drop_points"]))
    section = {"format": v.fmt.name, "layout": v.layout_of(best), "calibration": calibration,
               "kept_method": best}
    if tries[best][1]["passed"]:
        section["fp32_layers"] = []
        made = [(tries[best][0], v.info(best, ()), tries[best][1])]
        return made, _finish(section, v, ctx, best, (), tries, budget)
    cheap = v.fmt.name in CHEAP_VARIANTS
    try:
        layers = ranked_layers(v, best, tries[best][0], TOP_K if cheap else 0)
    except Exception as e:  # noqa: BLE001 - a graph the analysis cannot read: search the
        # layers in model order instead, and say why there is no ranking
        layers, section["error"] = [], f"{type(e).__name__}: {e}"[:300]
    section["layers"] = layers
    fp32, steps = fewest_fp32_layers(v, best, _order(layers) + v.unranked(layers),
                                     prune_max=None if cheap else COSTLY_PRUNE_MAX)
    section["steps"] = steps
    section["models_tried"] = len(v.done)
    if fp32 is None:
        section["fp32_layers"] = None
        section["why"] = "still fails with every layer that can be kept fp32 in fp32"
        return [], _finish(section, v, ctx, best, None, tries, budget)
    out_path, out_row = v.get(best, fp32)
    return [(out_path, v.info(best, fp32), out_row)], \
        _finish(section, v, ctx, best, fp32, tries, budget)


def sensitivity(ctx, v, method: str, path: Path, fixed: dict | None = None) -> dict:
    """The per-layer table of one published int8 artifact (report.json), and its chart.

    Args:
        ctx: export's ExportContext; the chart is written into ctx.stage.
        v: the format's Variants, or None when the format has no per-layer analysis.
        method: the artifact's calibration method.
        path: the artifact (a mixed one is ranked through its full int8 twin).
        fixed: what `fallback` returned, if it ran: its ranking is reused.

    Returns:
        {"format", "layout", "calibration_method", "top_k", "layers", "fallback", "chart"};
        "error" instead of layers when the analysis could not read the model.
    """
    from edgekit.exporting.int8.report import chart

    out = {"format": v.fmt.name, "layout": v.layout, "calibration_method": method,
           "top_k": TABLE_TOP_K.get(v.fmt.name, 0), "fallback": fixed}
    if not out["top_k"]:
        out["why_no_accuracy"] = SKIPPED
    if fixed and fixed.get("layers"):
        layers = fixed["layers"]
    else:
        try:
            layers = ranked_layers(v, method, v.get(method)[0] if v.mixed(path) else path,
                                   out["top_k"])
        except Exception as e:  # noqa: BLE001 - a graph the analysis cannot read: the export
            # itself passed its gate, so report why the table is missing instead of failing it
            return {**out, "layers": [], "error": f"{type(e).__name__}: {e}"[:300]}
    out["layers"] = layers
    if layers:
        chart(layers, [n["node"] for n in (fixed or {}).get("fp32_layers") or []],
              ctx.stage / v.fmt.chart, v.fmt.file)
        out["chart"] = v.fmt.chart
    return out


def ranked_layers(v, method: str, int8: Path, top_k: int = TOP_K) -> list[dict]:
    """Quantized layers of `int8`, most harmful first, as report rows.

    SQNR for every layer (the layer alone against fp32, and in the model: v.sqnr); for the
    TOP_K lowest that can be kept fp32, the held-out drop with that layer alone kept fp32 and
    the points that recovers. Order: layers by points recovered (measured ones), then by SQNR.
    """
    rows = v.sqnr(method, int8)
    base = v.get(method)[1] if top_k else None
    for r in [r for r in rows if r["node"]][:top_k]:
        alone = v.get(method, (r["node"],))[1]
        r["drop_if_fp32"] = alone["accuracy_drop_points"]
        r["recovered_points"] = round(base["accuracy_drop_points"] - r["drop_if_fp32"], 4)
    rows.sort(key=lambda r: -r.get("recovered_points", float("-inf")))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def fewest_fp32_layers(v, method: str, order: list[str], prune_max: int | None = None):
    """The fewest layers of `order` (most sensitive first) to keep fp32 so the model passes.

    The shortest passing prefix (doubling, then bisection: each probe is one artifact and
    check), then each layer of it removed again, least sensitive first, if the model still
    passes without it (only for a prefix of at most `prune_max` layers; None: any). With a
    `prune_max`, a longer prefix is bisected only to within an eighth of its length (32
    layers: to 28, two probes instead of four): the model is then mostly fp32 whatever the
    last few layers do, and each probe is a whole re-export.

    Args:
        v: the Variants to write and check models with.
        method: the calibration method of every model tried.
        order: layer names, most sensitive first.

    Returns:
        (the layers to keep fp32, or None when even all of `order` fails; the probes made,
        each {"fp32_layers", "drop_points", "passed"}).
    """
    steps = []

    def passes(nodes) -> bool:
        row = v.get(method, tuple(nodes))[1]
        steps.append({"fp32_layers": len(nodes), "drop_points": row["accuracy_drop_points"],
                      "passed": row["passed"]})
        return row["passed"]

    n, lo, hi = len(order), 0, 1  # order[:lo] failed (or lo == 0)
    if not order:
        return None, steps
    while hi < n and not passes(order[:hi]):
        lo, hi = hi, hi * 2
    if hi >= n:  # doubled past the end: every layer is the last try
        hi = n
        if not passes(order):
            return None, steps
    close = 1 if prune_max is None or hi <= prune_max else max(1, hi // 8)
    while hi - lo > close:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if passes(order[:mid]) else (mid, hi)
    kept = list(order[:hi])
    prune = prune_max is None or hi <= prune_max
    for node in reversed(order[:hi]) if prune else ():
        if len(kept) > 1 and passes([k for k in kept if k != node]):
            kept.remove(node)
    return tuple(kept), steps


def _order(layers: list[dict]) -> list[str]:
    """The layers that can be kept fp32, in rank order, each once (a module may own several
    quantized ops; an op outside any module has no name to keep fp32 by)."""
    return list(dict.fromkeys(r["node"] for r in layers if r["node"]))


def _finish(section: dict, v, ctx, method: str, fp32, tries: dict, budget: float) -> dict:
    """Accuracy, size and latency of the result against full int8 and fp32."""
    full_path, full_row = tries[method]
    section["full_int8"] = {"bytes": full_path.stat().st_size,
                            "drop_points": full_row["accuracy_drop_points"]}
    fp32_model = v.fp32_model if v.fp32_model and v.fp32_model.is_file() else None
    section["fp32_bytes"] = fp32_model.stat().st_size if fp32_model else None
    if fp32 is None:
        return section
    path, row = v.get(method, fp32)
    modules = {r["node"]: r["module"] for r in section.get("layers", [])}
    section.update({"fp32_layers": [{"node": n, "module": modules.get(n, "")} for n in fp32],
                    "accuracy": row["score"], "drop_points": row["accuracy_drop_points"],
                    "bytes": path.stat().st_size})
    paths = {"mixed": path, "full_int8": full_path}
    if fp32_model:
        paths["fp32"] = fp32_model
    section["latency_ms"] = _latency(ctx, paths, budget)
    return section


def _latency(ctx, paths: dict[str, Path], budget: float) -> dict | None:
    """Median batch-1 latency of each model here, or None when the target is elsewhere."""
    if not ctx.target.tune or budget <= 0:
        return None
    from edgekit.exporting.timing import time_artifacts
    from edgekit.machine import usable_cores

    times = time_artifacts(list(paths.values()), ctx.calibration[:1].astype(np.float32),
                           threads=usable_cores(), budget_s=budget)
    return {k: round(times[p]["ms"], 4) for k, p in paths.items()}


class Checker:
    """(format, path) -> the report row of export's own check (the same gate), keeping each
    Check for the candidate it becomes."""

    def __init__(self, held, gate):
        self.held, self.gate, self.checks = held, gate, {}

    def of(self, fmt):
        """path -> report row, for artifacts of `fmt`."""
        from edgekit.exporting.check import check_artifact

        def check(path: Path) -> dict:
            self.checks[path] = check_artifact(path, fmt, self.held, self.gate)
            return self.checks[path].row(self.held.task.metric)

        return check


def rescue(ctx, cands: list, checker: Checker, budget: float) -> tuple[list, dict]:
    """Export's hook: for every int8 format none of whose candidates passed, the candidate
    `fallback` makes.

    Returns:
        (new edgekit.exporting.choose.Candidate list, {format name: report section}).
    """
    from edgekit import formats as catalog
    from edgekit.exporting.choose import Candidate

    made, fixed = [], {}
    for fmt in (f for f in catalog.formats() if f.search):
        mine = [c for c in cands if c.fmt.name == fmt.name]
        # A QAT run's learned ranges: the search re-calibrates, so it would make another model.
        if not mine or any(c.learned or c.check.passed for c in mine) or all(
                c.check.score is None for c in mine):  # passed, or did not run at all
            continue
        search = importlib.import_module(fmt.search)
        found = search.variants(ctx, mine, checker.of(mine[0].fmt), checker.held.task.metric)
        if found is None:  # a layout without a search (dynamic int8 ONNX)
            continue
        v, start, first = found
        out, fixed[fmt.name] = fallback(ctx, v, start, first, budget)
        made += [Candidate(v.fmt, p, info, checker.checks[p]) for p, info, _ in out]
    return made, fixed


def table(ctx, chosen: list, checker: Checker, fixed: dict) -> dict | None:
    """Export's hook: each published int8 artifact's per-layer table and chart, by format."""
    out = {}
    for c in chosen:
        if not c.fmt.search or c.kept:
            continue
        if c.learned:  # a QAT run's ranges: ranked by SQNR, nothing re-calibrated
            from edgekit.exporting.int8.qat import layer_table

            out[c.fmt.name] = layer_table(ctx, c, c.fmt.chart, SQNR_SAMPLES)
            continue
        search = importlib.import_module(c.fmt.search)
        out[c.fmt.name] = search.table(ctx, c, checker.of(c.fmt), checker.held.task.metric,
                                       fixed.get(c.fmt.name))
    return {k: v for k, v in out.items() if v} or None
