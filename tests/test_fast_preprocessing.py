"""The fast image path: decoder-side downscale, proven by export, used only where allowed."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import edgekit

from edgekit.errors import EdgekitError
from edgekit.runtime import load
from edgekit.runtime.preprocess import get_kind, image, image_spec, validate
from edgekit.runtime.preprocess.image import (
    decode_image,
    exact_spec,
    fast_allowed,
    fast_path,
    needed_size,
)

SPEC = image_spec("RGB", (224, 224), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
FAST = {**SPEC, "fast": {"allowed": True}}
OPENCV = {**SPEC, "fast": {"allowed": False, "opencv": {"allowed": True}}}


def jpeg(w: int = 640, h: int = 480, seed: int = 0) -> bytes:
    """A photo-like JPEG: smooth gradients plus noise, quality 90."""
    from PIL import Image

    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([x / w, y / h, (x + y) / (w + h)], -1) * 255
    rgb += np.random.default_rng(seed).normal(0, 12, rgb.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def png(w: int = 640, h: int = 480) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(jpeg(w, h))).save(out, "PNG")
    return out.getvalue()


def test_fast_path_decodes_a_jpeg_at_a_reduced_scale_and_no_smaller_than_needed():
    assert decode_image(jpeg(), spec=SPEC).size == (640, 480)  # exact: every pixel
    assert decode_image(jpeg(), spec=FAST).size == (320, 240)  # 1/2: still >= 224 each way
    assert decode_image(jpeg(1920, 1440), spec=FAST).size == (480, 360)  # 1/8 would be 180
    resized = {**FAST, "resize": 256}  # shorter side 256 before the crop: 480 cannot halve
    assert needed_size(resized) == (256, 256)
    assert decode_image(jpeg(), spec=resized).size == (640, 480)
    assert decode_image(png(), spec=FAST).size == (640, 480)  # not a JPEG: no-op


def test_fast_path_is_close_to_the_exact_one_and_exact_where_nothing_shrinks():
    kind = get_kind(SPEC)
    body = jpeg()
    exact, fast = kind.prepare(body, SPEC), kind.prepare(body, FAST)
    assert exact.shape == fast.shape == (3, 224, 224)
    std = np.asarray(SPEC["std"], np.float32)[:, None, None]
    pixel = np.abs((exact - fast) * std) * 255  # one pixel value, 0-255
    assert 0 < pixel.max() < 64 and pixel.mean() < 4
    small = png(200, 150)  # an upscale: neither draft nor reduce applies; the fused
    # normalization differs by float rounding only
    np.testing.assert_allclose(kind.prepare(small, FAST), kind.prepare(small, SPEC), atol=1e-5)


@pytest.mark.parametrize("size,resize", [((640, 480), 0), ((640, 480), 256), ((2000, 1500), 0),
                                         ((3000, 2000), 256), ((200, 150), 0)])
def test_opencv_resize_is_close_to_the_exact_path_at_any_scale(size, resize):
    """JPEGs decoded at a reduced scale, PNGs (no draft) reduced by whole factors first, an
    upscale: every case lands on the model's shape within a few pixel values of the exact path
    (no aliasing from a plain bilinear over a big downscale)."""
    spec, fast = ({**SPEC, "resize": resize}, {**OPENCV, "resize": resize}) if resize else (
        SPEC, OPENCV)
    kind = get_kind(SPEC)
    std = np.asarray(SPEC["std"], np.float32)[:, None, None]
    for body in (jpeg(*size), png(*size)):
        exact, quick = kind.prepare(body, spec), kind.prepare(body, fast)
        assert quick.shape == exact.shape == (3, 224, 224) and quick.dtype == np.float32
        pixel = np.abs((exact - quick) * std) * 255
        assert pixel.mean() < 4 and pixel.max() < 64


def test_runtime_takes_opencv_only_where_allowed_and_cv2_imports(monkeypatch):
    both = {**SPEC, "fast": {"allowed": True, "opencv": {"allowed": True}}}
    assert fast_path(both) == "opencv" and fast_path(OPENCV) == "opencv"
    assert fast_path(FAST) == "pillow" and fast_path(SPEC) is None
    assert fast_path({**SPEC, "fast": {"allowed": True, "opencv": {"allowed": False}}}) == "pillow"
    gray = image_spec("L", (28, 28), [0.5], [0.5])  # one channel: a 2-D array through cv2
    assert get_kind(gray).prepare(jpeg(), {**gray, **{"fast": OPENCV["fast"]}}).shape == (1, 28, 28)
    monkeypatch.setattr(image, "opencv", lambda: None)  # a Pi without the video extra
    assert fast_path(both) == "pillow" and fast_path(OPENCV) is None
    np.testing.assert_array_equal(get_kind(SPEC).prepare(jpeg(), OPENCV),
                                  get_kind(SPEC).prepare(jpeg(), SPEC))


def test_fast_verdict_is_validated_and_read():
    assert fast_allowed(FAST) and not fast_allowed(SPEC)
    assert not fast_allowed({**SPEC, "fast": {"allowed": False, "drop_points": 3.0}})
    assert exact_spec(FAST) == SPEC
    validate(FAST, "m.json")
    with pytest.raises(EdgekitError, match=r"m.json: manifest preprocess fast 'yes'; expected"):
        validate({**SPEC, "fast": "yes"}, "m.json")
    validate({**SPEC, "fast": {"allowed": True, "opencv": {"allowed": False}}}, "m.json")
    with pytest.raises(EdgekitError, match=r"m.json: manifest preprocess fast.opencv 1; expected"):
        validate({**SPEC, "fast": {"allowed": True, "opencv": 1}}, "m.json")


def test_export_records_the_verdict_and_the_runtime_follows_it(tiny_run, tmp_path):
    """lenet5's export measured the fast path on its held-out digits as photos; the manifest
    every artifact embeds carries the verdict, and --exact-preprocessing drops it."""
    export = tiny_run / "export"
    report = json.loads((export / "report.json").read_text())
    verdict = report["fast_preprocessing"]
    assert verdict["samples"] == min(report["test_samples"], 256)
    assert verdict["photo"] == [640, 480] and verdict["max_pixel_diff"] >= 0
    assert verdict["allowed"] == (verdict["drop_points"] <= 0.5)
    assert 0 <= verdict["top1_agreement"] <= 1
    cv = verdict["opencv"]  # cv2 imports here (the dev extra): measured on the same photos
    assert cv["allowed"] == (cv["drop_points"] <= 0.5) and 0 <= cv["top1_agreement"] <= 1
    assert cv["max_pixel_diff"] >= 0
    text = (export / "report.md").read_text()
    assert "Fast image preprocessing" in text and "Export time: " in text
    assert "With OpenCV's resize" in text
    assert list(report["stage_seconds"]) == ["prepare", "write", "check", "int8 search",
                                             "timing", "int8 layer table"]
    assert list(report["stage_cpu_seconds"]) == list(report["stage_seconds"])
    runner = load(export / "model.int8.onnx")
    assert runner.manifest["preprocess"]["fast"] == verdict  # embedded, not only listed
    assert runner.preprocess_spec()["fast"] == verdict
    runner.exact_preprocessing = True
    assert "fast" not in runner.preprocess_spec()
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg())
    for flag in ((), ("--exact-preprocessing",)):
        proc = edgekit("predict", export / "model.int8.onnx", photo, "--json", *flag)
        assert json.loads(proc.stdout)["label"] in runner.manifest["labels"]
