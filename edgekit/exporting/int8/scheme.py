"""A quantization scheme that belongs to no backend: what "int8" means before any library's words.

A target (edgekit.exporting.int8.targets) lists schemes; each int8 format translates a scheme into
its
own library's options: onnxruntime.quantization (edgekit.exporting.formats.onnx_int8: QuantType,
QuantFormat, per_channel, reduce_range), torch.ao (edgekit.exporting.formats.torchscript_int8: the
quantized engine and its observers), and PT2E quantizers alike. A backend that cannot honour a
field says so rather than silently doing something else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

SIGN = {"int8": "s8", "uint8": "u8"}


@dataclass(frozen=True)
class Scheme:
    """How tensors become 8-bit integers, and how they are stored."""

    mode: str = "static"  # "static" (activation ranges calibrated) or "dynamic" (at run time)
    form: str = "qdq"  # "qdq": quantize/dequantize pairs a runtime fuses; "qoperator": int ops
    activations: str = "int8"  # "int8" or "uint8"; dynamic quantization always uses uint8
    weights: str = "int8"  # "int8" or "uint8"
    symmetric: bool = True  # weight zero points 0 (the fast ARM kernels need it)
    per_channel: bool = True  # one weight scale per output channel
    reduce_range: bool = False  # 7-bit weights: avoids VPMADDUBSW saturation without VNNI

    @property
    def name(self) -> str:
        """Short name, e.g. "qdq-u8s8-pc", "qop-u8s8-pc-rr", "dyn-u8s8"."""
        head = "dyn" if self.mode == "dynamic" else {"qdq": "qdq", "qoperator": "qop"}[self.form]
        acts = "u8" if self.mode == "dynamic" else SIGN[self.activations]
        return (f"{head}-{acts}{SIGN[self.weights]}" + ("-pc" if self.per_channel else "")
                + ("-rr" if self.reduce_range else ""))

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}
