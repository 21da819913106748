"""Per-layer sensitivity of an int8 QDQ ONNX model: how much error each quantized layer adds.

For every quantized layer (a Conv, Gemm, MatMul, ... node whose inputs come through
DequantizeLinear) two signal-to-quantization-noise ratios against the fp32 model, in dB
(20 log10 |fp32| / |fp32 - int8|, onnxruntime.quantization.qdq_loss_debug's definition):

    sqnr_db             the layer alone: its int8 version (input Q/DQ, int8 weights, output Q/DQ
                        exactly as in the int8 model) fed the fp32 model's own input tensor.
                        This is the error the layer adds, free of what came before it.
    cumulative_sqnr_db  its output in the int8 model: every quantized layer before it included
                        (what qdq_loss_debug matches as "xmodel" error).

Both come from one pass of the calibration inputs through two models: the fp32 model with a
copy of each layer's int8 island grafted beside it, and the int8 model with each layer's
output made a graph output. The accuracy side (a layer alone kept fp32) needs a model per
layer and lives in edgekit.exporting.int8.mixed.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# Nodes that only move, select or clip int8 values: they share their input's scale and add no
# rounding of their own, so they get no row (nor a chance to be kept fp32 alone).
PASS_THROUGH = ("QuantizeLinear", "DequantizeLinear", "Reshape", "Transpose", "Flatten",
                "Squeeze", "Unsqueeze", "MaxPool", "Relu", "Clip", "Slice", "Gather", "Split",
                "Identity", "Pad", "Resize", "Expand", "Tile", "Max")
SUFFIX = "__edgekit_int8"  # tensors of the grafted int8 islands
BATCH = 16  # calibration inputs per run: bounds the memory of every intermediate output


@dataclass
class Layer:
    """One quantized layer of an int8 model and the error it adds."""

    node: str  # ONNX node name (what nodes_to_exclude takes)
    module: str  # the PyTorch module it comes from ("" when unknown)
    op: str
    sqnr_db: float | None  # the layer alone (fp32 input), None if it could not be isolated
    cumulative_sqnr_db: float | None  # in the int8 model

    def to_dict(self) -> dict:
        return asdict(self)


def layer_sqnr(fp32: Path, int8: Path, x: np.ndarray, input_name: str = "input") -> list[Layer]:
    """SQNR of every quantized layer of the QDQ model `int8` against the fp32 model `fp32`.

    Args:
        fp32: the fp32 model `int8` was quantized from (after quant_pre_process: the same
            tensor names).
        int8: a static QDQ model (onnxruntime quantize_static, QuantFormat.QDQ).
        x: inputs (N, ...) float32, e.g. the calibration samples.

    Returns:
        One Layer per quantized layer, lowest (worst) `sqnr_db` first; layers that could not
        be isolated last.
    """
    import onnx

    ref = onnx.load(str(fp32))
    qdq = onnx.load(str(int8))
    known = _tensor_names(ref.graph)
    layers, grafted, cumulative, reference = [], [], {}, {}
    for node in quantized_layers(qdq.graph):
        island = _island(qdq.graph, node, known)
        out_int8 = _dequantized_output(qdq.graph, node)
        match = next((t for t in (node.output[0], out_int8) if t in known), None)
        if match is None:
            continue  # no fp32 twin to compare with (a fused pattern): nothing to report
        reference[node.name] = match
        cumulative[node.name] = out_int8
        if island is not None:
            grafted.append((node.name, island))
        layers.append(Layer(node.name, module_of(node, qdq.graph), node.op_type, None, None))
    alone = _graft(ref, qdq, grafted)
    islands = dict((name, out) for name, (_, out) in grafted)
    pairs = {}  # layer -> (fp32 tensor, its int8-alone twin or None, the int8 model's tensor)
    for layer in layers:
        r = reference[layer.node]
        pairs[layer.node] = (r, islands.get(layer.node), cumulative[layer.node])
    totals = _noise(alone, qdq, x, input_name, pairs)
    for layer in layers:
        layer.sqnr_db, layer.cumulative_sqnr_db = totals[layer.node]
    return sorted(layers, key=lambda a: (a.sqnr_db is None, a.sqnr_db or 0.0))


def sqnr(signal: float, noise: float) -> float:
    """10 log10 signal / noise (sums of squares) in dB, capped at 200 (a layer int8 leaves
    exact)."""
    eps = float(np.finfo(np.float32).eps)
    return round(min(200.0, 10 * float(np.log10(max(signal, eps) / max(noise, eps)))), 2)


def quantized_layers(graph) -> list:
    """Nodes of a QDQ graph that compute in int8: a Conv, Gemm, MatMul, Add, Mul, Concat, ...
    (anything but PASS_THROUGH) whose first input is dequantized."""
    producer = {o: n for n in graph.node for o in n.output}
    out = []
    for node in graph.node:
        if node.op_type in PASS_THROUGH or not node.input:
            continue
        first = producer.get(node.input[0])
        if first is not None and first.op_type == "DequantizeLinear":
            out.append(node)
    return out


def module_of(node, graph=None) -> str:
    """The PyTorch module a node comes from: the owner of its weight ("M.weight" -> M), else
    its innermost name scope (a BatchNorm folded into a Conv, an Add: no weight of their own)."""
    scopes: list[str] = []
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":  # "['', 'features', 'features.0', 'conv2d']"
            try:
                scopes = [str(s) for s in ast.literal_eval(prop.value)][:-1]  # last: the op
            except (ValueError, SyntaxError):
                scopes = []
    names = list(node.input[1:2])
    if graph is not None:  # a QDQ graph: the weight is DequantizeLinear("M.weight_quantized")
        producer = {o: n for n in graph.node for o in n.output}
        names += [producer[n].input[0] for n in names if n in producer]
    for name in names:
        for tail in (".weight_quantized", ".weight"):
            if name.endswith(tail):
                owner = name[:-len(tail)]
                # quant_pre_process renames fused weights: "ConvMulFusion_W_features.0"
                return next((s for s in scopes if s and owner.endswith("_" + s)), owner)
    return scopes[-1] if scopes else ""


def _tensor_names(graph) -> set[str]:
    return ({i.name for i in graph.input} | {i.name for i in graph.initializer}
            | {o for n in graph.node for o in n.output})


def _output_qdq(graph, node) -> tuple | None:
    """The (QuantizeLinear, DequantizeLinear) pair `node`'s output goes through, if any."""
    consumers = [n for n in graph.node if node.output[0] in n.input]
    q = next((n for n in consumers if n.op_type == "QuantizeLinear"), None)
    if q is None:
        return None
    dq = next((n for n in graph.node if n.op_type == "DequantizeLinear"
               and q.output[0] in n.input[:1]), None)
    return (q, dq) if dq is not None else None


def _dequantized_output(graph, node) -> str:
    """What the int8 model hands on from `node`: its output after Q -> DQ, or the output."""
    pair = _output_qdq(graph, node)
    return pair[1].output[0] if pair else node.output[0]


def _island(graph, node, known: set[str]):
    """The int8 nodes that compute `node` from fp32 tensors: (nodes, initializer names).

    Input Q -> DQ (the activation quantized as in the int8 model), weight and bias DQ, the
    node, output Q -> DQ. None when an input comes from something else than a fp32 tensor
    the fp32 model also has.
    """
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name for i in graph.initializer}
    nodes, used = [], set()
    for name in node.input:
        if not name or name in inits:
            used.add(name)
            continue
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            if name not in known:
                return None
            continue  # a fp32 tensor (e.g. a shape): read from the fp32 model
        src = dq.input[0]
        if src in inits:
            used.update(dq.input)
            nodes.append(dq)
            continue
        q = producer.get(src)
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] not in known:
            return None
        used.update(q.input[1:])
        used.update(dq.input[1:])
        nodes += [q, dq]
    nodes.append(node)
    pair = _output_qdq(graph, node)
    if pair:
        nodes += list(pair)
        used.update(pair[0].input[1:])
        used.update(pair[1].input[1:])
    if not used <= inits | {""}:
        return None  # a scale or zero point computed by a node: not a plain QDQ island
    return nodes, used


def _graft(ref, qdq, grafted: list) -> object:
    """The fp32 model with each layer's int8 island beside it; fills each island's output.

    `grafted` holds (node name, island) pairs; each island becomes (island, output name).
    """
    import onnx

    model = _copy(ref)
    graph = model.graph
    inits = {i.name: i for i in qdq.graph.initializer}
    have = {i.name for i in graph.initializer}
    for k, (name, (nodes, used)) in enumerate(grafted):
        tag = f"{SUFFIX}{k}"
        produced = {o for n in nodes for o in n.output}
        for init in sorted(i for i in used if i):
            if init + tag not in have:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[init])
                copy.name = init + tag
                graph.initializer.append(copy)
        for n in nodes:
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            copy.name = n.name + tag
            copy.input[:] = [i + tag if i in produced or i in used and i else i
                             for i in n.input]
            copy.output[:] = [o + tag for o in n.output]
            graph.node.append(copy)
        grafted[k] = (name, (nodes, nodes[-1].output[0] + tag))
    return model


def _noise(alone, qdq, x: np.ndarray, input_name: str, pairs: dict) -> dict:
    """layer -> (SQNR alone, SQNR in the int8 model), summed over `x` batch by batch.

    `pairs`: layer -> (fp32 tensor, its int8-alone twin or None, the int8 model's tensor).
    Only sums of squares are kept, so memory stays one batch of activations.
    """
    ref_names = sorted({n for r, a, _ in pairs.values() for n in (r, a) if n})
    qdq_names = sorted({c for _, _, c in pairs.values()})
    ref_run, qdq_run = _session(alone, ref_names), _session(qdq, qdq_names)
    sums = {k: [0.0, 0.0, 0.0] for k in pairs}  # signal, noise alone, noise cumulative
    for i in range(0, len(x), BATCH):
        feed = {input_name: x[i:i + BATCH].astype(np.float32)}
        ref = dict(zip(ref_names, ref_run.run(ref_names, feed), strict=True))
        got = dict(zip(qdq_names, qdq_run.run(qdq_names, feed), strict=True))
        for k, (r, a, c) in pairs.items():
            r64 = ref[r].astype(np.float64)
            sums[k][0] += float(np.sum(r64 * r64))
            if a:
                sums[k][1] += float(np.sum(np.square(r64 - ref[a])))
            sums[k][2] += float(np.sum(np.square(r64 - got[c])))
    return {k: (sqnr(s, n) if pairs[k][1] else None, sqnr(s, c))
            for k, (s, n, c) in sums.items()}


def _session(model, outputs: list[str]):
    """An onnxruntime session of `model` with `outputs` made graph outputs."""
    import onnx
    import onnxruntime as ort

    model = _copy(model)
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in outputs if n not in present)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # outputs without shapes: onnxruntime would warn for each
    opts.intra_op_num_threads = 1  # export shares the machine; one thread is plenty here
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def _copy(model):
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out
