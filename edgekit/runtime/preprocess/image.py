"""The `image` kind: an image file or HTTP body -> float32 (C, H, W), as training prepared it.

Training images go through `image_to_array` too, so an image on the Pi is prepared exactly as
the model saw its training data.

What gets converted, and how (any Pillow-readable format; the format is detected from the
bytes, not from the file name or declared media type):
- 8-bit images of any mode (L, RGB, RGBA, LA, CMYK, 1, ...) are converted to the manifest's
  mode by Pillow; transparency is ignored (the stored colors are used), as torchvision's
  loaders do.
- Palette images (P, PA) are converted through their palette, so each pixel gets its color.
- 16-bit grayscale (I;16 and PNG's 16-bit gray, which Pillow opens as I;16 or I) is scaled to
  8 bits (value / 257, rounded) first: Pillow's own convert() would clip every value above 255
  to white. 16-bit color PNGs are already reduced to 8 bits by Pillow when it reads them.
- 32-bit integer images with values above 65535 and floating-point images (mode F) are
  refused: there is no range to map them from.
- Animated images use their first frame.

The fast path (`fast_allowed(spec)`): a JPEG is decoded at 1/2, 1/4 or 1/8 of its size by the
decoder itself (Pillow's `draft`, libjpeg's scaled DCT) when that still leaves at least the
pixels the model needs, and a big downscale goes through `Image.reduce` before the final
filter (`resize(..., reducing_gap=REDUCING_GAP)`). Both change pixels slightly against the exact
path training used, so export measures what they cost on held-out photos
(edgekit.exporting.fastpath) and writes its verdict into the spec as `fast`; the runtime takes
the fast path only where that says `allowed` (and never with --exact-preprocessing).

Where OpenCV is installed (the `video` extra) the export also measures a second fast resize,
OpenCV's (`fast["opencv"]`): an integer box `reduce` first while the image is at least twice
the target, then `cv2.resize` (bilinear without Pillow's antialiasing support, about 7x faster
on a 320x240 -> 224x224 photo). The runtime uses it where that verdict says `allowed` and cv2
imports; otherwise Pillow's fast resize where `allowed`; otherwise the exact path.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import not_a_file
from edgekit.preprocess_spec import KEYS, MODES, RESAMPLE
from edgekit.runtime.preprocess.kind import KINDS, Kind

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm",
            ".pbm", ".pnm")


def image_spec(mode: str, size: tuple[int, int], mean: list[float], std: list[float],
               resample: str = "bilinear", resize: int = 0) -> dict:
    """Preprocessing for images: convert to `mode`, resize to (H, W), scale to [0, 1], normalize.

    With `resize` > 0 the shorter side is resized to `resize` (aspect kept) and the center
    (H, W) cropped, as torchvision's Resize(resize) + CenterCrop(size) do.
    """
    if mode not in MODES:
        raise ValueError(f"image mode {mode!r}; expected L or RGB")
    if resample not in RESAMPLE:
        raise ValueError(f"resample {resample!r}; expected one of {RESAMPLE}")
    channels = MODES[mode]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean/std need {channels} values for mode {mode}")
    spec = {"kind": "image", "mode": mode, "size": [int(size[0]), int(size[1])],
            "resample": resample, "scale": 1 / 255, "mean": [float(m) for m in mean],
            "std": [float(s) for s in std]}
    if resize:
        if resize < max(size):
            raise ValueError(f"resize {resize} is smaller than the crop {size}")
        spec["resize"] = int(resize)
    return spec


# Pixels an input may have, at least: a 16-megapixel photo decodes for any model.
MIN_PIXEL_BUDGET = 4096 * 4096
# ... and at most this many times the model's input (or its resize square), if more.
PIXELS_PER_INPUT_PIXEL = 64
# The fast path's resize reduces by an integer factor first while the image stays at least
# this many times the target size (Pillow's `reducing_gap`; 2 keeps the final filter's input
# dense enough that its output is close to a full-size resample).
REDUCING_GAP = 2.0


def fast_path(spec: dict | None) -> str | None:
    """Which fast path the export allowed for this spec and this machine can run: "opencv",
    "pillow", or None (the exact path)."""
    fast = (spec or {}).get("fast")
    if not isinstance(fast, dict):
        return None
    cv = fast.get("opencv")
    if isinstance(cv, dict) and cv.get("allowed") is True and opencv() is not None:
        return "opencv"
    return "pillow" if fast.get("allowed") is True else None


def fast_allowed(spec: dict | None) -> bool:
    """Whether the export allowed a fast path for this spec (its `fast` verdict)."""
    return fast_path(spec) is not None


@functools.lru_cache(maxsize=1)
def opencv():
    """The cv2 module (one thread per call: edgekit runs its own lanes), or None."""
    try:
        import cv2
    except ImportError:
        return None
    cv2.setNumThreads(1)
    return cv2


def exact_spec(spec: dict) -> dict:
    """The spec without the export's fast-path verdict: the exact path, as training ran."""
    return {k: v for k, v in spec.items() if k != "fast"}


def needed_size(spec: dict) -> tuple[int, int]:
    """The smallest (width, height) a decoded image may have for this spec without the final
    resize becoming an upscale: the model's input, or the resize square before the crop."""
    h, w = spec["size"]
    side = spec.get("resize") or 0
    return max(w, side), max(h, side)


def pixel_budget(spec: dict) -> int:
    """The most pixels edgekit decodes for a model of this spec: a 420 KB PNG can hold 144
    megapixels (1.2 GB decoded), so the input's size bounds what a request may cost."""
    h, w = spec["size"]
    side = spec.get("resize") or 0
    return max(MIN_PIXEL_BUDGET, PIXELS_PER_INPUT_PIXEL * max(h * w, side * side))


def load_image(path: str | Path, spec: dict | None = None):
    """Open an image file. Raises EdgekitError if it is missing, empty or not an image, or
    (given the model's `spec`) has more pixels than `pixel_budget(spec)`."""
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"image {str(path)!r} {not_a_file(path)}; "
                           "expected an image file (PNG, JPEG, ...)")
    if path.stat().st_size == 0:
        raise EdgekitError(f"image {str(path)!r} is empty (0 bytes); expected an image file "
                           "(PNG, JPEG, ...)")
    return _open(path, repr(str(path)), spec)


def decode_image(body: bytes, what: str = "body", spec: dict | None = None):
    """Encoded image bytes (an HTTP body) -> PIL image. Raises EdgekitError if not an image
    (or, given `spec`, over the pixel budget)."""
    if not body:
        raise EdgekitError(f"{what} is empty; expected an image (PNG, JPEG, ...)")
    return _open(io.BytesIO(body), what, spec)


def _open(source, what: str, spec: dict | None = None):
    import warnings

    from PIL import Image, UnidentifiedImageError

    # The pixel budget below is edgekit's guard; Pillow's own warning (at 89 megapixels)
    # would only add a raw line on stderr. Process-wide, as warnings filters are.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    try:
        with Image.open(source) as img:
            if spec is not None:
                _within_budget(img, spec, what)
                if fast_allowed(spec):  # JPEG only (else a no-op): fewer pixels decoded
                    img.draft(spec["mode"], needed_size(spec))
            img.load()  # the first frame of an animation; the file is not read again
            return img
    except EdgekitError:
        raise
    except UnidentifiedImageError:  # its message repeats the path or names a BytesIO object
        raise EdgekitError(f"{what} is not an image Pillow can read (PNG, JPEG, ...): "
                           "unknown format") from None
    except Image.DecompressionBombError:
        budget = f"{pixel_budget(spec) / 1e6:.1f}" if spec else "a few dozen"
        raise EdgekitError(f"{what} has more than {Image.MAX_IMAGE_PIXELS * 2 / 1e6:.0f} "
                           f"megapixels; edgekit decodes at most {budget} megapixels for this "
                           "model: resize the image first") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise EdgekitError(
            f"{what} is not an image Pillow can read (PNG, JPEG, ...): {e}") from None


def _within_budget(img, spec: dict, what: str) -> None:
    """Decode a JPEG over the budget reduced (1/2 to 1/8 scale, still at least the size the
    model needs); refuse any other image over it, before decoding a pixel."""
    budget = pixel_budget(spec)
    w, h = img.size
    if w * h <= budget:
        return
    img.draft(spec["mode"], needed_size(spec))  # JPEG only; else a no-op
    if img.size[0] * img.size[1] <= budget:
        return
    h_need, w_need = spec["size"]
    raise EdgekitError(f"{what} is {w}x{h} pixels ({w * h / 1e6:.1f} megapixels); this model "
                       f"takes {w_need}x{h_need} and edgekit decodes at most "
                       f"{budget / 1e6:.1f} megapixels for it: resize the image first")


def to_8bit(img, what: str = "image"):
    """16-bit grayscale -> 8-bit L by value / 257; refuse modes with no range to map from."""
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode == "I":
        a = np.asarray(img)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise EdgekitError(f"{what} is a 32-bit integer image with values outside 0..65535; "
                               "expected an 8- or 16-bit image")
        return Image.fromarray(np.rint(a.astype(np.float32) / 257).astype(np.uint8), "L")
    if img.mode == "F":
        raise EdgekitError(f"{what} is a 32-bit floating-point image; expected an 8- or 16-bit "
                           "image (PNG, JPEG, ...)")
    if img.mode in ("P", "PA"):
        return img.convert("RGBA")  # through the palette, transparency kept as alpha
    return img


def image_to_array(img, spec: dict) -> np.ndarray:
    """PIL image -> float32 array (C, H, W) as the model expects it (through the fast
    path's reduce-then-resample where `fast_path(spec)` names one)."""
    path = fast_path(spec)
    resize = functools.partial(_resize_opencv if path == "opencv" else _resize_pillow,
                               spec["resample"], REDUCING_GAP if path else None)
    h, w = spec["size"]
    img = to_8bit(img)
    if img.mode != spec["mode"]:
        img = img.convert(spec["mode"])
    if spec.get("resize"):  # shorter side to `resize`, then the center (h, w)
        short, (iw, ih) = spec["resize"], img.size
        nw, nh = (short, int(short * ih / iw)) if iw <= ih else (int(short * iw / ih), short)
        if (nw, nh) != (iw, ih):
            img = resize(img, (nw, nh))
        left, top = int(round((nw - w) / 2.0)), int(round((nh - h) / 2.0))
        img = img[top:top + h, left:left + w] if isinstance(img, np.ndarray) else img.crop(
            (left, top, left + w, top + h))
    elif img.size != (w, h):
        img = resize(img, (w, h))
    mean = np.asarray(spec["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(spec["std"], dtype=np.float32)[:, None, None]
    if path is not None:  # a table lookup per channel: equal to the exact path up to rounding
        u8 = np.asarray(img)  # (H, W) or (H, W, C) uint8
        u8 = u8[..., None] if u8.ndim == 2 else u8
        lut = _lookup(float(spec["scale"]), tuple(spec["mean"]), tuple(spec["std"]))
        out = np.empty((u8.shape[2], h, w), np.float32)
        for c in range(len(out)):
            np.take(lut[c % len(lut)], u8[..., c], out=out[c])
        return out
    x = np.asarray(img, dtype=np.float32) * np.float32(spec["scale"])  # (H, W) or (H, W, C)
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)  # (C, H, W)
    return np.ascontiguousarray((x - mean) / std)


def _resize_pillow(resample: str, gap: float | None, img, size: tuple[int, int]):
    from PIL import Image

    filters = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
    return img.resize(size, filters[resample], reducing_gap=gap)


def _resize_opencv(resample: str, _gap, img, size: tuple[int, int]) -> np.ndarray:
    """PIL image -> uint8 array (H, W[, C]) of `size` (W, H): reduced by whole factors while at
    least twice the target (a box filter), then cv2.resize with the spec's filter."""
    cv2 = opencv()
    (iw, ih), (w, h) = img.size, size
    factor = (max(1, iw // w), max(1, ih // h))  # what is left to resize: under 2x each way
    if factor != (1, 1):
        img = img.reduce(factor)
    filters = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR,
               "bicubic": cv2.INTER_CUBIC}
    return cv2.resize(np.asarray(img), size, interpolation=filters[resample])


@functools.lru_cache(maxsize=16)
def _lookup(scale: float, mean: tuple, std: tuple) -> np.ndarray:
    """(C, 256) float32: every 8-bit value of each channel as the model takes it,
    u8 * (scale / std) - mean / std in float32 (one multiply-add, as numpy would compute it
    per pixel; a lookup costs half of that on a 224x224 photo)."""
    mean32 = np.asarray(mean, np.float32)[:, None]
    std32 = np.asarray(std, np.float32)[:, None]
    values = np.arange(256, dtype=np.uint8)[None, :]
    out = np.multiply(values, np.float32(scale) / std32, dtype=np.float32)
    out -= mean32 / std32
    return out


class ImageKind(Kind):
    name = "image"
    keys = KEYS["image"]
    suffixes = SUFFIXES
    media_types = ("image/*", "application/octet-stream")

    def read(self, path: Path, spec: dict):
        return load_image(path, spec)

    def decode(self, body: bytes, media_type: str | None, spec: dict):
        declared = f" (declared {media_type})" if media_type else ""
        return decode_image(body, f"body{declared}", spec)

    def to_array(self, value: Any, spec: dict) -> np.ndarray:
        if not hasattr(value, "convert"):
            raise EdgekitError(f"image input must be a file path, encoded bytes or a PIL "
                               f"image; got {type(value).__name__}")
        return image_to_array(value, spec)

    def example(self, spec: dict):
        from PIL import Image

        h, w = spec["size"]
        return Image.new(spec["mode"], (w, h))

    def prepare(self, raw: Any, spec: dict, media_type: str | None = None) -> np.ndarray:
        return super().prepare(Path(raw) if isinstance(raw, str) else raw, spec, media_type)


KINDS.register("image")(ImageKind())

