"""ONNX models as protobuf bytes, written by hand: for the base install, which has no `onnx`.

`edgekit doctor`'s int8 self-test (edgekit.selftest) and the GEMM peak of `edgekit bench`
(edgekit.benchmark.peak) build their small models in code with these few encoders of the protobuf
wire format (field numbers from onnx/onnx.proto). A model built in code cannot drift from what
it claims to compute the way a shipped binary file could.

    graph = field(1, node("MatMul", ["a", "b"], ["y"])) + field(2, "name") \
        + field(11, value_info("a", (4, 4))) + ...
    onnxruntime.InferenceSession(model(graph, opset=17, ir_version=8))
"""

from __future__ import annotations

import numpy as np

# ONNX TensorProto data types and AttributeProto types
FLOAT, UINT8, INT8, INT32 = 1, 2, 3, 6
ATTR_INT, ATTR_INTS = 2, 7

OPSET, IR_VERSION = 17, 8  # what the hand-built models declare (onnxruntime >= 1.20)


def model(graph: bytes, opset: int, ir_version: int) -> bytes:
    """A serialized ModelProto of `graph` (GraphProto bytes) in the default domain."""
    opset_id = field(1, b"") + varint_field(2, opset)
    return (varint_field(1, ir_version) + field(2, b"edgekit") + field(7, graph)
            + field(8, opset_id))


def varint(n: int) -> bytes:
    """A protobuf varint; negative int64 values as 10-byte two's complement."""
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def varint_field(number: int, value: int) -> bytes:
    """A varint protobuf field (ints, enums)."""
    return varint(number << 3) + varint(value)


def field(number: int, payload: bytes | str) -> bytes:
    """A length-delimited protobuf field (strings, bytes, embedded messages)."""
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(data)) + data


def tensor(name: str, array: np.ndarray) -> bytes:
    """A TensorProto (an initializer) of a float32 or int8 array."""
    dtype = {np.dtype(np.float32): FLOAT, np.dtype(np.int8): INT8}[array.dtype]
    return (b"".join(varint_field(1, d) for d in array.shape) + varint_field(2, dtype)
            + field(8, name) + field(9, array.astype(array.dtype.newbyteorder("<")).tobytes()))


def node(op: str, inputs: list[str], outputs: list[str], **attrs) -> bytes:
    """A NodeProto with int or list-of-int attributes."""
    out = b"".join(field(1, i) for i in inputs) + b"".join(field(2, o) for o in outputs)
    out += field(3, f"{op}_{outputs[0]}") + field(4, op)
    for key, value in attrs.items():
        if isinstance(value, list):
            attr = field(1, key) + b"".join(varint_field(8, v) for v in value) \
                + varint_field(20, ATTR_INTS)
        else:
            attr = field(1, key) + varint_field(3, value) + varint_field(20, ATTR_INT)
        out += field(5, attr)
    return out


def value_info(name: str, shape: tuple[int, ...], dtype: int = FLOAT) -> bytes:
    """A ValueInfoProto: a graph input or output of a fixed shape."""
    dims = b"".join(field(1, varint_field(1, d)) for d in shape)
    tensor_type = varint_field(1, dtype) + field(2, dims)
    return field(1, name) + field(2, field(1, tensor_type))
