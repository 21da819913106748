"""int8 artifacts of a QAT run (edgekit.qat): the ranges training learned, not a calibration.

    fake-quantized model -> convert_pt2e (BatchNorm folded, int8 weights, quantize/dequantize
    around each int8 op) -> torch.onnx -> QDQ ONNX, two layouts:

    qat-s8s8-pc   as trained: int8 activations (asymmetric), int8 weights per channel
    qat-u8s8-pc   the same numbers with uint8 activations (zero point + 128: q + 128 for every
                  q, exactly the same real values), the layout x86 CPUs without fast
                  int8 x int8 kernels run fastest (onnxruntime's MLAS: U8S8)

Both get their fp32 biases quantized to int32 at scale (input scale x weight scale), as
onnxruntime's own quantizer writes them: its QDQ fusion turns DequantizeLinear -> Conv/Gemm ->
QuantizeLinear into one int8 operator only when every input comes through a DequantizeLinear.
export times the two and keeps the faster that passes the same checks as any int8 ONNX. The
`.pte` takes the converted model through ExecuTorch's lowering (edgekit.exporting.formats.pte_int8).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LEARNED = "learned in quantization-aware training"  # a layout's "ranges": Candidate.learned
LAYOUT = {"method": "static", "ranges": LEARNED,
          "weights": "int8", "symmetric": True, "per_channel": True, "form": "qdq"}


def onnx_candidates(ctx, manifest: dict) -> list[tuple[Path, dict]]:
    """(file, layout) of the two int8 ONNX layouts of ctx.qat, written in ctx.candidates."""
    import onnx

    from edgekit import qat
    from edgekit.exporting.formats.onnx import check, embed, export_onnx

    trained = ctx.candidates / "model.int8.qat.onnx"
    export_onnx(qat.convert(ctx.qat), ctx.example, trained, ctx.cfg.opset, manifest)
    out = []
    for activations in ("int8", "uint8"):
        proto = onnx.load(str(trained))
        quantize_biases(proto)
        if activations == "uint8":
            activations_to_uint8(proto)
        name = "qat-s8s8-pc" if activations == "int8" else "qat-u8s8-pc"
        info = {"name": name, **LAYOUT, "activations": activations}
        embed(proto, {**manifest, "artifact": {**manifest["artifact"], "layout": info,
                                               "target": ctx.target.name}})
        check(proto)
        path = ctx.candidates / f"model.int8.{name}.onnx"
        onnx.save(proto, str(path))
        out.append((path, info))
    trained.unlink()
    return out


def activations_to_uint8(proto) -> None:
    """Shift every activation QuantizeLinear/DequantizeLinear from int8 to uint8.

    uint8 q = int8 q + 128 with zero point + 128: the same real value for every q. Weights
    (a DequantizeLinear of an initializer) stay int8.
    """
    values = _constants(proto)
    shifted: dict[str, str] = {}
    for node in proto.graph.node:
        activation = node.op_type == "QuantizeLinear" or (
            node.op_type == "DequantizeLinear" and node.input[0] not in values)
        if not activation or len(node.input) < 3 or values[node.input[2]].dtype != np.int8:
            continue
        zp = node.input[2]
        if zp not in shifted:
            shifted[zp] = _add(proto, f"{zp}_uint8",
                               (values[zp].astype(np.int16) + 128).astype(np.uint8))
        node.input[2] = shifted[zp]
    del proto.graph.value_info[:]  # it types the shifted tensors int8; shape inference redoes it


def quantize_biases(proto) -> None:
    """An fp32 bias of a Conv/Gemm whose input and weight are dequantized becomes int32
    dequantized at (input scale x weight scale), the form onnxruntime fuses."""
    import onnx

    values = _constants(proto)
    producer = {o: n for n in proto.graph.node for o in n.output}
    for i in reversed(range(len(proto.graph.node))):
        node = proto.graph.node[i]
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3:
            continue
        x, w = producer.get(node.input[0]), producer.get(node.input[1])
        bias = values.get(node.input[2])
        if not (x and w and x.op_type == w.op_type == "DequantizeLinear"
                and bias is not None and bias.dtype == np.float32):
            continue
        scale = (values[x.input[1]].astype(np.float64)
                 * values[w.input[1]].astype(np.float64)).reshape(-1)
        scale = np.broadcast_to(scale, bias.shape) if scale.size == 1 else scale
        q = np.clip(np.round(bias / scale), -2**31, 2**31 - 1).astype(np.int32)
        name = node.input[2]
        dq = onnx.helper.make_node(
            "DequantizeLinear", [_add(proto, f"{name}_int32", q),
                                 _add(proto, f"{name}_scale", scale.astype(np.float32))],
            [f"{name}_dequantized"], name=f"{name}_DequantizeLinear", axis=0)
        proto.graph.node.insert(i, dq)
        node.input[2] = dq.output[0]


def _constants(proto) -> dict[str, np.ndarray]:
    """Initializers and Constant node outputs, by name."""
    from onnx import numpy_helper

    found = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return found


def _add(proto, name: str, value: np.ndarray) -> str:
    from onnx import numpy_helper

    proto.graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def report_entry(prep, chosen: list, metric: str) -> dict | None:
    """report.json's "qat": the run QAT fine-tuned and each int8 artifact against its fp32.

    The gate compares int8 with the QAT run's own fp32 weights; a user asks how far int8 is
    from the model they trained before QAT, so the report gives that drop too.
    """
    import json

    from edgekit.rundir import RunDir

    if not prep.recipe.qat.epochs:
        return None
    record = json.loads(RunDir(prep.run).metrics.read_text(encoding="utf-8")).get("qat", {})
    base = record.get(f"base_test_{metric}")
    task = prep.held.task
    rows = [{"file": c.path.name, metric: c.check.score, "drop_vs_base_points":
             round(task.worse_by(base, c.check.score), 4)
             if base is not None and task.higher_is_better else None,
             "ranges": "learned" if c.learned else "calibrated"}
            for c in chosen if c.fmt.precision == "int8" and c.check.score is not None]
    return {"base": record.get("base"), f"base_{metric}": base, "epochs": record.get("epochs"),
            # which epoch the run kept, against its epoch 0 (plain int8 of the base, simulated)
            "kept_epoch": record.get("kept_epoch"),
            f"start_test_{metric}": record.get(f"start_test_{metric}"),
            f"kept_test_{metric}": record.get(f"kept_test_{metric}"),
            "ranges": "learned in training (ONNX, .pte; TorchScript int8 is calibrated: torch.ao "
            "cannot read PT2E's ranges)" if prep.qat is not None else
            "calibrated: the int8 plan is not static int8 of every layer (dynamic, or "
            "--int8-exclude), which QAT's graph does not describe", "int8": rows}


def markdown(entry: dict | None, task) -> list[str]:
    """report.md's lines for report_entry's dict."""
    if not entry:
        return []
    base = entry.get(f"base_{task.metric}")
    shown = "" if base is None else f" (PyTorch fp32 {task.format(base)})"
    def against(drop: float | None) -> str:
        if drop is None:
            return ""
        return f", {abs(drop):.2f} points {'below' if drop >= 0 else 'above'} that fp32"

    drops = "; ".join(f"{r['file']} ({r['ranges']} ranges) {task.format(r[task.metric])}"
                      f"{against(r['drop_vs_base_points'])}" for r in entry["int8"])
    start, kept = (entry.get(f"{k}_test_{task.metric}") for k in ("start", "kept"))
    epoch = entry.get("kept_epoch")
    if epoch is None or start is None or kept is None:
        chose = ""
    elif epoch == 0:
        chose = (f" No QAT epoch beat plain int8 of that run ({task.format(start)}, simulated):"
                 " the calibrated start (epoch 0) was kept.")
    else:
        chose = (f" Kept epoch {epoch}: {task.format(kept)} held out, simulated int8, against "
                 f"{task.format(start)} for plain int8 of that run (epoch 0).")
    return ["", f"Quantization-aware training: {entry['epochs']} epochs from run "
                f"{entry['base']}{shown}; int8 ranges {entry['ranges']}." + chose
                + (f" int8 against the run QAT started from: {drops}." if drops else "")]


NO_ACCURACY = ("the layers were trained with their int8 error, so keeping one fp32 would "
               "need another QAT run; ranked by SQNR only")


def layer_table(ctx, c, chart_name: str, samples: int) -> dict:
    """mixed.table's entry for an int8 artifact with learned ranges: per-layer SQNR.

    The QAT model converted with its weights left as quantize -> dequantize (the numbers of
    both the ONNX and the .pte) runs fp32, int8 and layer by layer alone
    (edgekit.exporting.int8.torch_sensitivity) on `samples` calibration inputs; the chart is written
    to ctx.stage / chart_name.
    """
    import warnings

    from edgekit import qat
    from edgekit.exporting.int8 import torch_sensitivity as ts
    from edgekit.exporting.int8.report import chart

    out = {"format": c.fmt.name, "layout": c.how.get("name", ""),
           "calibration_method": "learned-range (QAT)", "top_k": 0, "fallback": None,
           "why_no_accuracy": NO_ACCURACY}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = qat.convert(ctx.qat, fold_quantize=False)
            layers = ts.pt2e_layer_sqnr(converted, ts.batches(ctx.example, ctx.calibration,
                                                              samples))
    except Exception as e:  # noqa: BLE001 - the artifact passed its gate: say why no table
        return {**out, "layers": [], "error": f"{type(e).__name__}: {e}"[:300]}
    out["layers"] = [{**layer.to_dict(), "rank": i} for i, layer in enumerate(layers, 1)]
    if out["layers"]:
        chart(out["layers"], [], ctx.stage / chart_name, c.fmt.file)
        out["chart"] = chart_name
    return out
