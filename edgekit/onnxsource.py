"""An ONNX file from anywhere as the model of a run: no PyTorch at all.

`edgekit import model.onnx` keeps a copy as RUN/source/model.onnx with its one input renamed
to edgekit's `input` (so every int8 tool reads it as it reads edgekit's own exports); the
reference outputs every artifact is checked against come from onnxruntime on that copy.
Several outputs are packed into one (B, D) output, as a PyTorch model's are (tasks.Raw).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, one_line

INPUT = "input"  # edgekit.exporting.formats.onnx.INPUT_NAME (not imported: that needs torch)
PACKED = "packed"  # the single output several outputs are packed into


class OnnxSource:
    """The source ONNX loaded in onnxruntime: `run(x) -> {output name: array}`."""

    def __init__(self, path: Path, input_shape: tuple[int, ...]):
        import onnxruntime as ort

        self.path, self.edgekit_input_shape = path, tuple(input_shape)
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]
        self.edgekit_name = "source/model.onnx"

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        try:
            got = self.session.run(None, {INPUT: np.ascontiguousarray(x, np.float32)})
        except Exception as e:
            raise EdgekitError(f"the ONNX model rejects input of shape "
                               f"{'x'.join(map(str, x.shape[1:]))}: {one_line(e, 200)}") from None
        return {n: np.asarray(a, np.float32) for n, a in zip(self.names, got, strict=True)}


def copy_source(path: Path, dest: Path, inputs) -> OnnxSource:
    """Check an ONNX file edgekit can take and copy it to `dest`, its input named `input`.

    Raises:
        EdgekitError: a missing or unreadable file, several inputs, an input that is not
            float, or dynamic dimensions other than the batch without --input-shape.
    """
    import onnx

    if not path.is_file():
        raise EdgekitError(f"ONNX file {str(path)!r} does not exist")
    try:
        proto = onnx.load(str(path))
    except Exception as e:
        raise EdgekitError(f"{str(path)!r} is not an ONNX model: {one_line(e, 200)}") from None
    initializers = {i.name for i in proto.graph.initializer}
    real = [i for i in proto.graph.input if i.name not in initializers]
    if len(real) != 1:
        raise EdgekitError(f"{str(path)!r} has {len(real)} inputs "
                           f"({', '.join(i.name for i in real)}); edgekit takes models of one "
                           "input tensor")
    given = tuple(inputs.input_shape) if inputs.input_shape else None
    shape = _input_shape(real[0], given, path)
    if {o.domain: o.version for o in proto.opset_import}.get("", 13) < 13:  # per-channel int8
        proto = onnx.version_converter.convert_version(proto, 13)  # (DequantizeLinear axis)
    old = real[0].name
    if old != INPUT:
        _rename_input(proto, old, INPUT)
    dest.write_bytes(proto.SerializeToString())
    return OnnxSource(dest, shape)


def _input_shape(value, given: tuple | None, path: Path) -> tuple[int, ...]:
    t = value.type.tensor_type
    if t.elem_type != 1:  # TensorProto.FLOAT
        raise EdgekitError(f"{str(path)!r}: input {value.name!r} is not float32 (elem_type "
                           f"{t.elem_type}); edgekit feeds float32 inputs")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim][1:]
    if given is not None:
        if len(given) != len(dims) or any(d is not None and d != g for d, g in
                                          zip(dims, given, strict=True)):
            raise EdgekitError(f"--input-shape {'x'.join(map(str, given))} does not fit input "
                               f"{value.name!r} of {str(path)!r} ({_dims_text(dims)})")
        return given
    if any(d is None for d in dims):
        raise EdgekitError(f"{str(path)!r}: input {value.name!r} has dynamic dimensions "
                           f"({_dims_text(dims)}); give --input-shape, e.g. 3x224x224")
    return tuple(dims)


def _dims_text(dims) -> str:
    return "batch x " + " x ".join("?" if d is None else str(d) for d in dims)


def _rename_input(proto, old: str, new: str) -> None:
    for v in proto.graph.input:
        if v.name == old:
            v.name = new
    for node in _all_nodes(proto.graph):
        node.input[:] = [new if i == old else i for i in node.input]
    for o in proto.graph.output:
        if o.name == old:
            raise EdgekitError(f"input {old!r} is also an output; expected a model that "
                               "computes something")


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(g)


def pack_outputs(path: Path) -> None:
    """Rewrite `path` with its outputs packed into one (B, D) float output `packed`: each
    flattened per input, then concatenated in order (as edgekit.importer packs a PyTorch
    model's outputs)."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load(str(path))
    names = [o.name for o in proto.graph.output]
    flat = []
    for n in names:
        f = f"{n}__flat"
        cast = f"{n}__float"
        proto.graph.node.extend([
            helper.make_node("Cast", [n], [cast], to=TensorProto.FLOAT, name=f"{n}_cast"),
            helper.make_node("Flatten", [cast], [f], axis=1, name=f"{n}_flatten")])
        flat.append(f)
    proto.graph.node.append(helper.make_node("Concat", flat, [PACKED], axis=1,
                                             name="edgekit_pack"))
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_tensor_value_info(PACKED, TensorProto.FLOAT,
                                                            ["batch", None]))
    proto.metadata_props.add(key="edgekit.packed_outputs", value=",".join(names))
    path.write_bytes(proto.SerializeToString())
