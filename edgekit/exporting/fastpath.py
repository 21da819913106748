"""Export's proof of the fast image path: what decoder-side downscaling costs this model.

The runtime's fast path (edgekit.runtime.preprocess.image: JPEG `draft`, reduce before the
final resample) changes pixels slightly against the exact path training used. Whether that
matters depends on the model, so export measures it: each held-out image is made into the
photo a camera would hand the runtime (upscaled to PHOTO_SIZE, or 4x the model's input if
that is bigger, and saved as JPEG quality 90), prepared by both paths from the same bytes, and
both batches go through the PyTorch model. The verdict goes into the manifest's preprocess
spec as `fast` (and into the report):

    {"allowed": bool, "drop_points": exact - fast score (the task's 0-100 points),
     "top1_agreement": share of equal predictions (classification), "max_pixel_diff": the
     largest difference of one pixel value (0-255), "samples": N, "photo": [W, H],
     "opencv": {"allowed", "drop_points", "top1_agreement", "max_pixel_diff"}}

The runtime takes the fast path only where `allowed` is true. `opencv` (only where cv2 imports
at export) is the same measurement for the fast path with OpenCV's resize, which the runtime
prefers where it is allowed and cv2 imports there too.
"""

from __future__ import annotations

import io

import numpy as np

PHOTO_SIZE = (640, 480)  # a camera's VGA frame: what the benchmark's photos are
JPEG_QUALITY = 90
MAX_SAMPLES = 256  # held-out images measured (both paths through the model)
MAX_DROP_POINTS = 0.5  # the fast path may cost at most this many points of the task's score


def photo_size(spec: dict) -> tuple[int, int]:
    """(width, height) of the test photos for a model of this spec: PHOTO_SIZE, or 4x the
    model's input (the resize square for a resize + crop spec) if that is bigger, 4:3."""
    h, w = spec["size"]
    side = max(h, w, spec.get("resize") or 0)
    width = max(PHOTO_SIZE[0], 4 * side)
    return width, width * 3 // 4


def as_photo(img, size: tuple[int, int], mode: str) -> bytes:
    """A held-out PIL image as a camera photo of `size`: JPEG bytes, quality 90."""
    from PIL import Image

    photo = img.convert(mode).resize(size, Image.BICUBIC)
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def prepared(body: bytes, spec: dict) -> dict[str, np.ndarray]:
    """One photo prepared by the exact path and each fast one this machine can run:
    {"exact", "pillow"[, "opencv"]} -> (C, H, W) arrays."""
    from edgekit.runtime.preprocess.image import decode_image, exact_spec, image_to_array, opencv

    exact = exact_spec(spec)
    specs = {"exact": exact, "pillow": {**exact, "fast": {"allowed": True}}}
    if opencv() is not None:
        specs["opencv"] = {**exact, "fast": {"allowed": False, "opencv": {"allowed": True}}}
    return {path: image_to_array(decode_image(body, "photo", s), s) for path, s in specs.items()}


def measure(outputs, images, y: np.ndarray, spec: dict, task) -> dict:
    """The fast path's verdict for the model on held-out `images` (PIL) with targets `y`.

    Args:
        outputs: the fp32 model as a function, inputs (N, C, H, W) -> outputs (N, ...).

    Returns:
        The manifest's `fast` entry (see the module docstring).
    """
    n = min(len(y), MAX_SAMPLES)
    size = photo_size(spec)
    photos = [prepared(as_photo(images[i], size, spec["mode"]), spec) for i in range(n)]
    batches = {path: np.stack([p[path] for p in photos]) for path in photos[0]}
    out_exact = outputs(batches["exact"])
    verdict = {**_against(batches["exact"], out_exact, batches["pillow"], outputs, y[:n], spec,
                          task), "samples": n, "photo": list(size)}
    if "opencv" in batches:
        verdict["opencv"] = _against(batches["exact"], out_exact, batches["opencv"], outputs,
                                     y[:n], spec, task)
    return verdict


def _against(exact, out_exact, fast, outputs, y, spec: dict, task) -> dict:
    """One fast path's cost against the exact one: allowed, points, agreement, pixels."""
    # One pixel value's difference on the 0-255 scale: undo the normalization's std and scale.
    std = np.asarray(spec["std"], np.float32)[:, None, None]
    pixel = float(np.abs((exact - fast) * std).max() / spec["scale"])
    out_fast = outputs(fast)
    drop = float(task.drop_points(out_exact, out_fast, y))
    verdict = {"allowed": drop <= MAX_DROP_POINTS, "drop_points": round(drop, 3),
               "max_pixel_diff": round(pixel, 2)}
    if task.metric == "accuracy":
        agree = task.decode(out_exact) == task.decode(out_fast)
        verdict["top1_agreement"] = round(float(np.mean(agree)), 4)
    return verdict


def apply(prep) -> dict | None:
    """Measure the fast path for an image model and write the verdict into the manifest every
    artifact embeds (prep.manifest["preprocess"]["fast"]); None for other kinds of input."""
    spec = prep.manifest["preprocess"]
    if spec.get("kind") != "image" or prep.held_images is None:
        return None
    from edgekit.runtime.preprocess.image import exact_spec

    spec = exact_spec(spec)
    if prep.model is None:  # an imported ONNX file: onnxruntime on it stands for PyTorch
        from edgekit.exporting.check import batched
        from edgekit.onnxsource import OnnxSource

        source = OnnxSource(prep.source, prep.manifest["input"]["shape"][1:])

        def outputs(x):
            return batched(lambda b: next(iter(source.run(b).values())), x, 64)
    else:
        from edgekit.exporting.check import reference_outputs

        def outputs(x):
            return reference_outputs(prep.model, x, 64)
    verdict = measure(outputs, prep.held_images, prep.held.y, spec, prep.held.task)
    prep.manifest["preprocess"] = {**spec, "fast": verdict}
    return verdict


def markdown(verdict: dict | None) -> list[str]:
    """report.md's lines for the fast path's verdict."""
    if not verdict:
        return []
    agree = (f", top-1 agreement {verdict['top1_agreement']:.2%}"
             if "top1_agreement" in verdict else "")
    state = "allowed" if verdict["allowed"] else (
        f"not allowed (over {MAX_DROP_POINTS} points): the runtime uses the exact path")
    w, h = verdict["photo"]
    lines = ["", f"Fast image preprocessing (JPEG decoded at a reduced scale, reduce before "
                 f"resample): {state}. On {verdict['samples']} held-out images as {w}x{h} JPEG "
                 f"photos: {verdict['drop_points']:+.2f} points against the exact path{agree}, "
                 f"largest pixel difference {verdict['max_pixel_diff']:.0f}/255."]
    cv = verdict.get("opencv")
    if cv:
        agree = f", top-1 agreement {cv['top1_agreement']:.2%}" if "top1_agreement" in cv else ""
        state = "allowed (the runtime prefers it where cv2 imports)" if cv["allowed"] else (
            f"not allowed (over {MAX_DROP_POINTS} points)")
        lines += ["", f"With OpenCV's resize (box reduce, then cv2.resize): {state}; "
                      f"{cv['drop_points']:+.2f} points against the exact path{agree}, largest "
                      f"pixel difference {cv['max_pixel_diff']:.0f}/255."]
    return lines
