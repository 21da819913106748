"""Run exported artifacts. Importing this package needs numpy only (no torch, no onnx).

    runner = edgekit.runtime.load("model.int8.onnx")
    runner.classify_image("digit.png", k=3)   # [("3", 0.98), ("8", 0.01), ("5", 0.004)]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit import manifest as mf
from edgekit.errors import EdgekitError
from edgekit.fileio import not_a_file
from edgekit.runtime import preprocess

BACKENDS = {".onnx": "onnxruntime", ".ts": "torchscript"}


class Runner:
    """One loaded artifact. Backends implement `_run(x) -> logits` and set `input_shape`."""

    backend = ""

    def __init__(self, path: Path, manifest: dict | None):
        self.path = path
        self.manifest = manifest

    def run(self, x: np.ndarray) -> np.ndarray:
        """Model input (B, ...) float32 -> raw outputs (B, K) as float32."""
        return self._run(np.ascontiguousarray(x, dtype=np.float32))

    def example_input(self, batch: int = 1, seed: int = 0) -> np.ndarray:
        """A random input of the model's shape with the given batch size."""
        shape = [batch if d is None or isinstance(d, str) else d for d in self.input_shape]
        return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)

    def classify(self, x: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """Model input (B, ...) -> for each row the top-k (label, probability)."""
        labels = self._require_manifest()["labels"]
        return preprocess.topk(preprocess.softmax(self.run(x)), labels, k)

    def classify_image(self, image: str | Path, k: int = 5) -> list[tuple[str, float]]:
        """Image file -> top-k (label, probability), prepared as the manifest says."""
        spec = self._require_manifest()["preprocess"]
        if spec.get("kind") != "image":
            raise EdgekitError(f"{self.path.name} takes {spec.get('kind')} input, not an image")
        x = preprocess.image_to_array(preprocess.load_image(image), spec)
        return self.classify(x[None], k)[0]

    def _require_manifest(self) -> dict:
        if self.manifest is None:
            raise EdgekitError(
                f"{str(self.path)!r} carries no edgekit manifest (labels, preprocessing); "
                "export it with `edgekit export`"
            )
        return self.manifest

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def load(path: str | Path, threads: int | None = None) -> Runner:
    """Load an artifact with the backend its suffix names.

    Args:
        path: a `.onnx` (onnxruntime) or `.ts` (TorchScript, needs torch) file.
        threads: intra-op threads; None lets the backend choose.

    Raises:
        EdgekitError: missing file, unknown suffix, or a file that is not a valid model.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"artifact {str(path)!r} {not_a_file(path)}; "
                           f"expected a {' or '.join(BACKENDS)} file")
    if path.suffix not in BACKENDS:
        raise EdgekitError(
            f"artifact {str(path)!r}: unknown format {path.suffix or '(no suffix)'!r}; "
            f"expected one of: {', '.join(BACKENDS)}"
        )
    if BACKENDS[path.suffix] == "onnxruntime":
        from edgekit.runtime.onnx import OnnxRunner

        return OnnxRunner(path, threads)
    from edgekit.runtime.torchscript import TorchScriptRunner

    return TorchScriptRunner(path, threads)


def embedded_or_beside(path: Path, embedded: str | None) -> dict | None:
    """The manifest embedded in the artifact, else manifest.json beside it, else None."""
    if embedded:
        return mf.from_json(embedded, f"{path.name} (embedded manifest)")
    return mf.beside(path)


def predict(artifact: str | Path, image: str | Path | None = None, sample: int | None = None,
            k: int = 3, threads: int | None = None) -> tuple[str, list[tuple[str, float]]]:
    """Classify an image file, or held-out sample N shipped beside the artifact.

    Returns:
        (what was classified, top-k (label, probability) best first).

    Raises:
        EdgekitError: both or neither of image/sample, or any load/input error.
    """
    if (image is None) == (sample is None):
        raise EdgekitError("give either an IMAGE or --sample N, not both or neither")
    runner = load(artifact, threads=threads)
    if image is not None:
        return str(image), runner.classify_image(image, k)
    x, label = sample_input(artifact, sample)
    return f"held-out sample {sample} (label {label})", runner.classify(x[None], k)[0]


def sample_input(artifact: str | Path, index: int) -> tuple[np.ndarray, str]:
    """Held-out input `index` from the samples.npz shipped beside an artifact: (x, true label)."""
    path = Path(artifact).with_name("samples.npz")
    if not path.is_file():
        raise EdgekitError(f"no held-out samples beside {str(artifact)!r} ({path.name} missing)")
    with np.load(path, allow_pickle=False) as z:
        x, y = z["x"], z["y"]
    if not 0 <= index < len(y):
        raise EdgekitError(f"--sample {index}: expected 0 to {len(y) - 1}")
    manifest = mf.beside(Path(artifact))
    label = manifest["labels"][int(y[index])] if manifest else str(int(y[index]))
    return x[index], label
