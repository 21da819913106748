"""Pre- and post-processing shared by training data and the runtime (numpy + Pillow only).

Training images go through `image_to_array` too, so an image on the Pi is prepared exactly as
the model saw its training data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import not_a_file

RESAMPLE = ("nearest", "bilinear", "bicubic")


def image_spec(mode: str, size: tuple[int, int], mean: list[float], std: list[float],
               resample: str = "bilinear") -> dict:
    """Preprocessing for images: convert to `mode`, resize to (H, W), scale to [0, 1], normalize."""
    if mode not in ("L", "RGB"):
        raise ValueError(f"image mode {mode!r}; expected L or RGB")
    if resample not in RESAMPLE:
        raise ValueError(f"resample {resample!r}; expected one of {RESAMPLE}")
    channels = 1 if mode == "L" else 3
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean/std need {channels} values for mode {mode}")
    return {"kind": "image", "mode": mode, "size": [int(size[0]), int(size[1])],
            "resample": resample, "scale": 1 / 255, "mean": [float(m) for m in mean],
            "std": [float(s) for s in std]}


def load_image(path: str | Path):
    """Open an image file. Raises EdgekitError if it is missing or not an image."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"image {str(path)!r} {not_a_file(path)}; "
                           "expected an image file (PNG, JPEG, ...)")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise EdgekitError(
            f"{str(path)!r} is not an image Pillow can read (PNG, JPEG, ...): {e}"
        ) from None


def image_to_array(img, spec: dict) -> np.ndarray:
    """PIL image -> float32 array (C, H, W) as the model expects it."""
    from PIL import Image

    resample = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR,
                "bicubic": Image.BICUBIC}[spec["resample"]]
    h, w = spec["size"]
    img = img.convert(spec["mode"])
    if img.size != (w, h):
        img = img.resize((w, h), resample)
    x = np.asarray(img, dtype=np.float32) * np.float32(spec["scale"])  # (H, W) or (H, W, C)
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)  # (C, H, W)
    mean = np.asarray(spec["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(spec["std"], dtype=np.float32)[:, None, None]
    return (x - mean) / std


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (B, K) logits, stable for large values."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def topk(probs: np.ndarray, labels: list[str], k: int) -> list[list[tuple[str, float]]]:
    """(B, K) probabilities -> for each row the k best (label, probability), best first."""
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return [[(labels[i], float(p[i])) for i in row] for p, row in zip(probs, order, strict=True)]
