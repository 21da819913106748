"""A format that exists only in the tests: ONNX compressed with gzip, `model.gzonnx`.

Everything edgekit needs to export, check, publish, load, predict with and time it is here: the
catalog entry (registered on import), the exporter's `write` and the backend's Runner. No
module of edgekit names it.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from edgekit import formats
from edgekit.errors import EdgekitError
from edgekit.manifest import EMBED_KEY
from edgekit.runtime.onnx import ORT_TYPES
from edgekit.runtime.runner import Runner, embedded_or_listed

FORMAT = formats.Format(
    "gzonnx", "model.gzonnx", "gzonnx", "gzipped ONNX", "fp32", exporter=__name__,
    backend=f"{__name__}:GzOnnxRunner", needs=("onnx",), requires=("onnxruntime",),
    help="Write model.gzonnx (gzipped ONNX, a test-only format).")


def write(ctx, path: Path, manifest: dict) -> list[tuple[Path, dict]]:
    """Exporter: model.onnx from the stage, its own manifest embedded, gzipped."""
    import onnx

    from edgekit.exporting.formats.onnx import embed

    proto = onnx.load(str(ctx.stage / "model.onnx"))
    embed(proto, manifest)
    path.write_bytes(gzip.compress(proto.SerializeToString(), mtime=0))
    return [(path, {})]


class GzOnnxRunner(Runner):
    """Backend: onnxruntime on the decompressed bytes."""

    backend = "gzonnx"

    def __init__(self, path: Path, listed: dict | None, threads: int | None = None,
                 device: str = "cpu", index: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(gzip.decompress(path.read_bytes()), opts,
                                                providers=["CPUExecutionProvider"])
        except (OSError, EOFError, ValueError, RuntimeError) as e:
            raise EdgekitError(f"{str(path)!r} is not gzipped ONNX: {e}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        super().__init__(path, embedded_or_listed(path, meta.get(EMBED_KEY), listed), device)
        first = self.session.get_inputs()[0]
        self.input_name, self.input_shape = first.name, list(first.shape)
        self.input_dtype = np.dtype(ORT_TYPES[first.type])
        self.output_shape = list(self.session.get_outputs()[0].shape)
        self._ready()

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


if FORMAT.name not in formats.CATALOG:
    formats.register(FORMAT)
