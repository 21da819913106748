"""How the int8 artifacts keep their accuracy, for people: report.md section, chart.

Reads the "int8_accuracy" sections (one per int8 format) edgekit.exporting.int8.mixed writes into
report.json.
"""

from __future__ import annotations

from pathlib import Path


def markdown(sections: dict | None) -> list[str]:
    """report.md lines: per int8 format, the search, the layers kept fp32, the ranked layers."""
    if not sections:
        return []
    lines = ["", "## int8 accuracy, layer by layer"]
    for section in sections.values():
        lines += [""] + _format(section)
    return lines


def _format(section: dict) -> list[str]:
    from edgekit import formats as catalog

    file = catalog.get(section["format"]).file
    lines = [f"### {file}", ""]
    fix = section.get("fallback")
    if fix:
        lines += _fallback(fix) + [""]
    if section.get("error"):
        return lines + [f"Per-layer analysis failed: {section['error']}"]
    if section.get("why_no_table"):
        return lines + [f"No per-layer table ({section['layout']}): {section['why_no_table']}."]
    accuracy = (f" The {section['top_k']} lowest by SQNR were also re-quantized with that "
                "layer alone kept fp32 (drop if fp32; recovered: points won back against full "
                "int8)." if section["top_k"]
                else f" No drop if fp32: {section['why_no_accuracy']}.")
    lines += [f"Layers of {file} ({section['layout']}, {section['calibration_method']} "
              "calibration), most harmful first. SQNR alone: the int8 layer fed the fp32 "
              "model's input; in model: its output in the int8 model." + accuracy, "",
              "| rank | layer | node | op | SQNR alone dB | SQNR in model dB | drop if fp32 "
              "| recovered |",
              "| ---: | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in section["layers"]:
        lines.append(f"| {r['rank']} | {r['module'] or '-'} | {r['node'] or '-'} | {r['op']} "
                     f"| {_num(r['sqnr_db'])} | {_num(r['cumulative_sqnr_db'])} "
                     f"| {_num(r.get('drop_if_fp32'))} | {_num(r.get('recovered_points'))} |")
    if section.get("chart"):
        lines += ["", f"![per-layer sensitivity of {file}]({section['chart']})"]
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
    fp32 = f" (fp32 {fix['fp32_bytes'] / 1024:.1f} KB)" if fix.get("fp32_bytes") else ""
    lines.append(f"Mixed precision: {len(kept)} layer(s) kept fp32 ({names}): drop "
                 f"{fix['drop_points']:.2f} pts against {full['drop_points']:.2f} for full int8; "
                 f"{fix['bytes'] / 1024:.1f} KB against {full['bytes'] / 1024:.1f} KB{fp32}; "
                 f"{fix['models_tried']} int8 models written and checked.")
    ms = fix.get("latency_ms")
    if ms:
        vs32 = (f", fp32 {ms['fp32']:.3f} ms ({ms['mixed'] / ms['fp32']:.2f}x)"
                if "fp32" in ms else "")
        lines.append(f"Latency here, batch 1: mixed {ms['mixed']:.3f} ms, full int8 "
                     f"{ms['full_int8']:.3f} ms ({ms['mixed'] / ms['full_int8']:.2f}x){vs32}.")
    lines.append("The layers were chosen on the held-out split the gate reads.")
    return lines


def chart(layers: list[dict], fp32_nodes: list[str], path: Path,
          file: str = "model.int8.onnx") -> Path:
    """A PNG of the ranked layers: SQNR alone and in the model, points recovered if fp32."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgekit.fileio import atomic_path

    names = [(r["module"] or r["node"] or r["op"])
             + (" (fp32)" if r["node"] and r["node"] in fp32_nodes else "")
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
    right.barh(y, rec, color=["tab:red" if r["node"] and r["node"] in fp32_nodes else "tab:gray"
                              for r in layers])
    right.axvline(0, color="black", linewidth=0.5)
    right.set_xlabel("points recovered with this layer alone fp32")
    fig.suptitle(f"{file}: int8 sensitivity per layer (rank 1 = most harmful)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def _num(value) -> str:
    return "-" if value is None else f"{value:.2f}"
