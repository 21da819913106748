"""Multiply-accumulates per input of an ONNX model: the work a runtime cannot avoid.

Counted at export (the `onnx` package is an export-time dependency) and recorded in the
manifest, so `edgekit bench` can say how close an artifact runs to the machine's GEMM peak
(edgekit.benchmark.peak) without onnx installed:

    macs = count_macs("model.onnx")       # {"per_input": 1_814_073_344, "by_op": {...}, ...}

What counts: the products of Conv/ConvTranspose (grouped and depthwise too), Gemm, MatMul and
LSTM/GRU/RNN (every gate, every step, both directions), and their quantized forms
(QLinearConv, ConvInteger, MatMulInteger, QLinearMatMul, onnxruntime's QGemm,
MatMulIntegerToFloat, DynamicQuantizeMatMul, DynamicQuantizeLSTM). A QDQ int8 graph is plain
Conv/MatMul between QuantizeLinear/DequantizeLinear, so fp32 and int8 ONNX of one model count
the same. Element-wise work (activations, pooling, normalization, biases) is not counted: it is
small next to the products and no GEMM peak measures it.
"""

from __future__ import annotations

from math import prod
from pathlib import Path

# op type -> (index of the input that is the data X or A, index of the weight W or B)
_CONV = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
_MATMUL = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3),
           "MatMulIntegerToFloat": (0, 1), "DynamicQuantizeMatMul": (0, 1)}
_GEMM = {"Gemm": (0, 1), "QGemm": (0, 3)}
_RECURRENT = {"LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"}  # X, W, R are inputs 0, 1, 2
# onnxruntime's quantized ops (domain com.microsoft) that onnx's shape inference does not know,
# each shaped like a standard op of some of its inputs: op -> (standard op, those inputs).
_LIKE = {"QLinearAdd": ("Add", (0, 3)), "QLinearMul": ("Mul", (0, 3)),
         "QLinearSigmoid": ("Sigmoid", (0,)), "QLinearLeakyRelu": ("LeakyRelu", (0,)),
         "QLinearAveragePool": ("AveragePool", (0,)),
         "QLinearGlobalAveragePool": ("GlobalAveragePool", (0,)), "QGemm": ("Gemm", (0, 3)),
         "MatMulIntegerToFloat": ("MatMul", (0, 1)), "DynamicQuantizeMatMul": ("MatMul", (0, 1)),
         "DynamicQuantizeLSTM": ("LSTM", (0,)),
         "QLinearConcat": ("Concat", slice(2, None, 3))}  # (Y scale, Y zp, then X, s, zp...)
SLIM = 1024  # weights with more elements are shape-only for inference (fast on big models)


def count_macs(model) -> dict:
    """Count the multiply-accumulates of one input (batch 1) through an ONNX model.

    Every dynamic input dimension (the batch, a state's batch) is set to 1 and shapes are
    inferred with onnx.shape_inference. A node whose shapes stay unknown is listed, not guessed.

    Args:
        model: a path to an .onnx file or an onnx.ModelProto.

    Returns:
        {"per_input": total MACs, "by_op": {op type: MACs}, "uncounted": [node names whose
        shapes could not be inferred]}.
    """
    import onnx

    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    proto, shapes = infer(_batch_one(proto))
    by_op: dict[str, int] = {}
    uncounted: list[str] = []
    for node in proto.graph.node:
        macs = node_macs(node, shapes)
        if macs is None:
            uncounted.append(node.name or node.op_type)
        elif macs:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    return {"per_input": sum(by_op.values()), "by_op": by_op, "uncounted": uncounted}


def macs_entry(folder: Path) -> dict:
    """The manifest's `macs` key for an export folder: counted from its fp32 ONNX model.

    The count is the model's, so it holds for every artifact of the export (int8 and
    TorchScript run the same layers). Counted from model.onnx, else another .onnx present.

    Returns:
        {"macs": {"per_input", "counted_from", "by_op", "uncounted"}} ("per_input": None and
        "why" when the graph could not be counted), or {} when the folder holds no ONNX
        artifact.
    """
    onnx_files = sorted(Path(folder).glob("*.onnx"), key=lambda p: (p.name != "model.onnx",
                                                                      p.name))
    if not onnx_files:
        return {}
    return {"macs": {**try_count(onnx_files[0]), "counted_from": onnx_files[0].name}}


def try_count(path: Path) -> dict:
    """count_macs(path), or {"per_input": None, "why": one line} when counting fails.

    The count only informs `edgekit bench`: a graph this module cannot read must not fail an
    export whose artifacts passed their checks, nor a benchmark.
    """
    try:
        return count_macs(path)
    except Exception as e:  # onnx raises many types (DecodeError, InferenceError, ...)
        return {"per_input": None, "why": f"MACs not counted: {type(e).__name__}: "
                                          f"{' '.join(str(e).split())[:200]}"}


def node_macs(node, shapes: dict[str, list[int | None]]) -> int | None:
    """MACs of one node given the known tensor shapes (None = unknown dimension).

    Returns:
        0 for an op without products; None when the node multiplies but a dimension it
        needs is unknown.
    """
    op = node.op_type

    def dims(name: str) -> list[int | None]:
        return shapes.get(name) or []

    def of(i: int) -> list[int | None]:
        return dims(node.input[i]) if i < len(node.input) else []

    out = dims(node.output[0]) if node.output else []
    if op in _CONV or op == "ConvTranspose":
        x, w = _CONV.get(op, (0, 1))
        # Conv: each output element takes (C/group) x kernel products, W (M, C/group, k...).
        # ConvTranspose: each input element is spread over (M/group) x kernel outputs,
        # W (C, M/group, k...).
        return _product(of(x) if op == "ConvTranspose" else out, of(w)[1:])
    if op in _MATMUL:
        a, b = _MATMUL[op]
        # (..., M, K) @ (K, N): K products per output element; K from whichever side is known
        k = _first_known(of(a)[-1:] + of(b)[-2:-1])
        return _product(out, [k])
    if op in _GEMM:
        a, b = _GEMM[op]
        attrs = {attr.name: attr.i for attr in node.attribute}
        ka = of(a)[0 if attrs.get("transA") else 1:][:1]
        kb = of(b)[1 if attrs.get("transB") else 0:][:1]
        return _product(out, [_first_known(ka + kb)])
    if op in _RECURRENT:
        # X (T, B, I), or (B, T, I) with layout=1; W (D, G*H, I) and R (D, G*H, H) hold every
        # gate (G = 4 LSTM, 3 GRU, 1 RNN) of every direction D: one step of one sequence is
        # W @ x_t + R @ h_t, i.e. D*G*H*(I + H) products.
        w, r = _product(of(1)), _product(of(2))
        return _product(of(0)[:2], [None if w is None or r is None else w + r])
    if any(attr.type == attr.GRAPH for attr in node.attribute) and _multiplies(node):
        return None  # a Loop/Scan/If body that multiplies: its trip count is not counted
    return 0


def _product(*parts: list[int | None]) -> int | None:
    """The product of every dimension, None if any is unknown or there is none."""
    values = [d for part in parts for d in part]
    if not parts[0] or any(not isinstance(d, int) for d in values):
        return None
    return prod(values)


def _first_known(values: list[int | None]) -> int | None:
    return next((v for v in values if isinstance(v, int)), None)


def _multiplies(node) -> bool:
    """Whether a node's subgraphs (Loop, Scan, If bodies) hold an op this module counts."""
    counted = {*_CONV, "ConvTranspose", *_MATMUL, *_GEMM, *_RECURRENT}
    for attr in node.attribute:
        if attr.type == attr.GRAPH and any(
                n.op_type in counted or _multiplies(n) for n in attr.g.node):
            return True
    return False


def infer(proto, passes: int = 64):
    """onnx shape inference, carried through onnxruntime's quantized ops it does not know.

    Each pass gives the outputs of those ops (_LIKE) whose inputs are known a shape, then
    infers again, until nothing changes.

    Returns:
        (the inferred ModelProto, tensor name -> shape with None for unknown dimensions).
    """
    import onnx

    for _ in range(passes):
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        shapes = _shapes(proto.graph)
        types = {i.name: onnx.helper.make_tensor_type_proto(i.data_type, list(i.dims))
                 for i in proto.graph.initializer}
        types.update({v.name: v.type for v in [*proto.graph.input, *proto.graph.value_info]})
        found = [v for node in proto.graph.node
                 if node.op_type in _LIKE and node.output[0] not in types
                 for v in _like_outputs(node, types)]
        if not found:
            return proto, shapes
        proto.graph.value_info.extend(found)
    return proto, shapes


def _like_outputs(node, types: dict) -> list:
    """ValueInfos of a quantized node's outputs, from the standard op it is shaped like."""
    import onnx

    std, picks = _LIKE[node.op_type]
    inputs = list(node.input)[picks] if isinstance(picks, slice) else [
        node.input[i] for i in picks]
    if not all(i in types for i in inputs):
        return []
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.pop("channels_last", 0):
        return []  # NHWC pooling: no standard op has that shape rule
    if std == "LSTM":  # Y (T, D, B, H), Y_h and Y_c (D, B, H)
        t, b = (types[inputs[0]].tensor_type.shape.dim[i].dim_value for i in (0, 1))
        d = 2 if attrs.get("direction") == "bidirectional" else 1
        dims = [[t, d, b, attrs["hidden_size"]]] + [[d, b, attrs["hidden_size"]]] * 2
        return [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)
                for name, shape in zip(node.output, dims, strict=False) if name]
    if std in ("Sigmoid", "GlobalAveragePool", "Concat", "Add", "Mul", "MatMul"):
        attrs = {k: v for k, v in attrs.items() if k == "axis"}
    elif std == "Gemm":
        attrs = {k: v for k, v in attrs.items() if k in ("transA", "transB")}
    float_types = {i: onnx.helper.make_tensor_type_proto(
        onnx.TensorProto.FLOAT, [d.dim_value if d.HasField("dim_value") else None
                                 for d in types[i].tensor_type.shape.dim]) for i in inputs}
    std_node = onnx.helper.make_node(std, inputs, node.output[:1], **attrs)
    try:
        out = onnx.shape_inference.infer_node_outputs(
            onnx.defs.get_schema(std, 18), std_node, float_types)
    except Exception:  # onnx raises InferenceError and others: the shape stays unknown
        return []
    elem = _elem_type(node, types)
    return [onnx.helper.make_tensor_value_info(
        name, elem, [d.dim_value if d.HasField("dim_value") else None
                     for d in t.tensor_type.shape.dim]) for name, t in out.items()]


def _elem_type(node, types: dict) -> int:
    """The element type of a quantized op's output: a quantized type or float."""
    from onnx import TensorProto

    def of(i: int) -> int | None:
        name = node.input[i] if i < len(node.input) else ""
        return types[name].tensor_type.elem_type if name in types else None

    if node.op_type in ("MatMulIntegerToFloat", "DynamicQuantizeMatMul"):
        return TensorProto.FLOAT
    if node.op_type == "QGemm":  # float out without y_scale; y_zero_point's type with it
        if len(node.input) < 8 or not node.input[7]:
            return TensorProto.FLOAT
        return of(8) or TensorProto.UINT8
    return of(1 if node.op_type == "QLinearConcat" else 0) or TensorProto.FLOAT


def _batch_one(proto):
    """A copy of `proto` with every non-fixed input dimension set to 1, big weights slimmed."""
    import onnx

    proto = type(proto).FromString(proto.SerializeToString())
    weights = {i.name for i in proto.graph.initializer}
    # Big weights only need their shapes: as typed inputs, inference need not copy them.
    big = [i for i in proto.graph.initializer if prod(i.dims) > SLIM]
    for init in big:
        proto.graph.input.append(onnx.helper.make_tensor_value_info(
            init.name, init.data_type, list(init.dims)))
        proto.graph.initializer.remove(init)
    for value in proto.graph.input:
        if value.name in weights:
            continue
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value") or dim.dim_value < 1:
                dim.Clear()
                dim.dim_value = 1
    # Outputs and value_info recorded by the exporter still name the symbolic batch; drop
    # them so inference recomputes them from the batch-1 inputs instead of merging.
    del proto.graph.value_info[:]
    for value in proto.graph.output:
        value.type.tensor_type.ClearField("shape")
    return proto


def _shapes(graph) -> dict[str, list[int | None]]:
    """Tensor name -> shape (None for an unknown dimension) of every value with a known rank."""
    out: dict[str, list[int | None]] = {}
    for init in graph.initializer:
        out[init.name] = list(init.dims)
    for value in [*graph.input, *graph.value_info, *graph.output]:
        t = value.type.tensor_type
        if t.HasField("shape"):
            out.setdefault(value.name, [d.dim_value if d.HasField("dim_value") else None
                                        for d in t.shape.dim])
    return out
