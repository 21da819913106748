"""How the int8 ONNX artifact keeps its accuracy, for people: report.md section, chart.

Reads the "int8_accuracy" section edgekit.export.mixed writes into report.json.
"""

from __future__ import annotations

from pathlib import Path


def markdown(section: dict | None) -> list[str]:
    """report.md lines: the calibration search, the layers kept fp32, the ranked layers."""
    if not section:
        return []
    lines = ["", "## int8 accuracy, layer by layer", ""]
    fix = section.get("fallback")
    if fix:
        lines += _fallback(fix) + [""]
    if section.get("error"):
        return lines + [f"Per-layer analysis failed: {section['error']}"]
    lines += [f"Layers of model.int8.onnx ({section['layout']}, {section['calibration_method']} "
              "calibration), most harmful first. SQNR alone: the int8 layer fed the fp32 "
              "model's input; in model: its output in the int8 model. The "
              f"{section['top_k']} lowest by SQNR were also re-quantized with that layer alone "
              "kept fp32 (drop if fp32; recovered: points won back against full int8).", "",
              "| rank | layer | node | op | SQNR alone dB | SQNR in model dB | drop if fp32 "
              "| recovered |",
              "| ---: | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in section["layers"]:
        lines.append(f"| {r['rank']} | {r['module'] or '-'} | {r['node']} | {r['op']} "
                     f"| {_num(r['sqnr_db'])} | {_num(r['cumulative_sqnr_db'])} "
                     f"| {_num(r.get('drop_if_fp32'))} | {_num(r.get('recovered_points'))} |")
    if section.get("chart"):
        lines += ["", f"![per-layer sensitivity]({section['chart']})"]
    return lines


def _fallback(fix: dict) -> list[str]:
    tries = ", ".join(f"{t['method']} {t['drop_points']:.2f} pts"
                      + (" (pass)" if t["passed"] else "") for t in fix["calibration"])
    lines = [f"No int8 candidate passed the gate, so export searched ({fix['layout']}). "
             f"Calibration: {tries}; kept **{fix['kept_method']}**."]
    kept = fix.get("fp32_layers")
    if kept is None:
        lines.append(f"Mixed precision: no model passed ({fix.get('why', '')}).")
        return lines
    if not kept:
        return lines
    names = ", ".join(k["module"] or k["node"] for k in kept)
    full = fix["full_int8"]
    lines.append(f"Mixed precision: {len(kept)} layer(s) kept fp32 ({names}): drop "
                 f"{fix['drop_points']:.2f} pts against {full['drop_points']:.2f} for full int8; "
                 f"{fix['bytes'] / 1024:.1f} KB against {full['bytes'] / 1024:.1f} KB "
                 f"(fp32 {fix['fp32_bytes'] / 1024:.1f} KB); {fix['models_tried']} int8 models "
                 "written and checked.")
    ms = fix.get("latency_ms")
    if ms:
        lines.append(f"Latency here, batch 1: mixed {ms['mixed']:.3f} ms, full int8 "
                     f"{ms['full_int8']:.3f} ms ({ms['mixed'] / ms['full_int8']:.2f}x), fp32 "
                     f"{ms['fp32']:.3f} ms ({ms['mixed'] / ms['fp32']:.2f}x).")
    lines.append("The layers were chosen on the held-out split the gate reads.")
    return lines


def chart(layers: list[dict], fp32_nodes: list[str], path: Path) -> Path:
    """A PNG of the ranked layers: SQNR alone and in the model, points recovered if fp32."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgekit.fileio import atomic_path

    names = [(r["module"] or r["node"]) + (" (fp32)" if r["node"] in fp32_nodes else "")
             for r in layers]
    y = list(range(len(layers)))[::-1]  # rank 1 on top
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 1.2 + 0.3 * len(layers)),
                                      sharey=True)
    alone = [r["sqnr_db"] or 0.0 for r in layers]
    whole = [r["cumulative_sqnr_db"] or 0.0 for r in layers]
    left.barh([v + 0.2 for v in y], alone, height=0.4, label="layer alone")
    left.barh([v - 0.2 for v in y], whole, height=0.4, label="in the int8 model")
    left.set_xlabel("SQNR vs fp32 (dB, lower = more error)")
    left.set_yticks(y, names, fontsize=7)
    left.legend(fontsize=7)
    rec = [r.get("recovered_points") or 0.0 for r in layers]
    right.barh(y, rec, color=["tab:red" if r["node"] in fp32_nodes else "tab:gray"
                              for r in layers])
    right.axvline(0, color="black", linewidth=0.5)
    right.set_xlabel("points recovered with this layer alone fp32")
    fig.suptitle("int8 sensitivity per layer (rank 1 = most harmful)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def _num(value) -> str:
    return "-" if value is None else f"{value:.2f}"
