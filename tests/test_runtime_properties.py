"""Property tests of the runner's input handling: any shape, dtype or image it is given either
runs correctly or is refused with one line naming what was expected; nothing else escapes."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from edgekit.errors import EdgekitError, EdgekitWarning
from edgekit.runtime import load

pytestmark = pytest.mark.slow  # uses tiny_run
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

REAL = [np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8,
        np.uint16, np.uint64]
OTHER = [np.bool_, np.complex64, np.complex128, np.str_, np.bytes_, np.object_,
         "datetime64[s]", "timedelta64[ms]"]
MODEL_SHAPE = (1, 32, 32)


@pytest.fixture(scope="module")
def runner(tiny_run):
    return load(tiny_run / "export" / "model.int8.onnx")


def near_valid_shapes():
    """(B, 1, 32, 32) with B in 0..6, and the same with one dimension changed, added or lost."""
    def mutate(draw_args):
        batch, kind, axis, size = draw_args
        shape = [batch, *MODEL_SHAPE]
        if kind == "change":
            shape[axis] = size
        elif kind == "drop":
            del shape[axis]
        elif kind == "add":
            shape.insert(axis, size)
        return tuple(shape)

    return st.tuples(st.integers(0, 6), st.sampled_from(["keep", "change", "drop", "add"]),
                     st.integers(0, 3), st.integers(0, 40)).map(mutate)


def any_small_shape():
    return st.lists(st.integers(0, 12), min_size=0, max_size=5).map(tuple)


def expected_to_run(shape: tuple, dtype) -> bool:
    return (len(shape) == 4 and shape[0] > 0 and shape[1:] == MODEL_SHAPE
            and np.dtype(dtype).kind in "fiu")


def one_line_refusal(runner, x) -> str:
    with pytest.raises(EdgekitError) as e:
        runner.run(x)
    message = str(e.value)
    assert "\n" not in message and message.startswith("model.int8.onnx takes ")
    return message


@SETTINGS
@given(shape=st.one_of(near_valid_shapes(), any_small_shape()),
       dtype=st.sampled_from(REAL + OTHER))
def test_any_shape_and_dtype_runs_or_is_refused_in_one_line(runner, shape, dtype):
    x = np.zeros(shape, dtype)
    if expected_to_run(shape, dtype):
        out = runner.run(x)
        assert out.shape == (shape[0], 10) and out.dtype == np.float32
        assert np.isfinite(out).all()
    else:
        message = one_line_refusal(runner, x)
        if np.dtype(dtype).kind not in "fiu":
            assert message.endswith(f"got dtype {x.dtype}")
        else:
            assert f"got shape {shape}" in message and "(B, 1, 32, 32) float32" in message


@SETTINGS
@given(x=hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.just(1), st.just(32),
                                          st.just(32)),
                    elements=st.floats(allow_nan=False, allow_infinity=False, width=32)))
def test_finite_inputs_of_any_magnitude_run_without_a_warning(runner, x):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = runner.run(x)
    assert out.shape == (len(x), 10)


@pytest.mark.filterwarnings("ignore:invalid value encountered in dot:RuntimeWarning")
@SETTINGS
@given(batch=st.integers(1, 3), data=st.data())
def test_any_nan_or_inf_is_reported(runner, batch, data):
    x = np.zeros((batch, *MODEL_SHAPE), np.float32)
    flat = x.reshape(-1)
    spots = data.draw(st.lists(st.integers(0, flat.size - 1), min_size=1, max_size=5,
                               unique=True))
    for i in spots:
        flat[i] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    with pytest.warns(EdgekitWarning) as record:
        runner.run(x)
    ours = [str(r.message) for r in record if r.category is EdgekitWarning]
    assert len(ours) == 1 and f"holds {len(spots)} NaN/inf value(s) of {flat.size}" in ours[0]


MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "I;16", "I", "F", "PA"]


def make_image(mode: str, size: tuple[int, int], seed: int, top: int):
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))  # I;16
    if mode == "I":
        return Image.fromarray(rng.integers(0, top, (h, w)).astype(np.int32))
    if mode == "F":
        return Image.fromarray(rng.random((h, w), dtype=np.float32))
    rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if mode == "P":
        return rgb.quantize(colors=16)
    if mode == "PA":
        return rgb.quantize(colors=16).convert("PA")
    return rgb.convert(mode)


def encode(img, fmt: str) -> bytes | None:
    buf = io.BytesIO()
    try:
        img.save(buf, fmt)
    except (OSError, ValueError, KeyError):
        return None  # this format cannot store this mode
    return buf.getvalue()


@SETTINGS
@given(mode=st.sampled_from(MODES), size=st.tuples(st.integers(1, 80), st.integers(1, 80)),
       fmt=st.sampled_from(["PNG", "TIFF", "BMP", "JPEG", "GIF", "WEBP"]),
       seed=st.integers(0, 2**16), top=st.sampled_from([256, 65536, 2**20]))
def test_any_image_is_prepared_or_refused_in_one_line(runner, mode, size, fmt, seed, top):
    body = encode(make_image(mode, size, seed, top), fmt)
    if body is None:
        return
    stored = Image.open(io.BytesIO(body)).mode  # what the file really holds
    refused = stored == "F" or (stored == "I" and top > 65536)
    if refused:
        with pytest.raises(EdgekitError) as e:
            runner.prepare(body, "image/" + fmt.lower())
        assert "\n" not in str(e.value) and "expected an 8- or 16-bit image" in str(e.value)
        return
    x = runner.prepare(body, "image/" + fmt.lower())
    assert x.shape == MODEL_SHAPE and x.dtype == np.float32 and np.isfinite(x).all()
    spec = runner.manifest["preprocess"]
    lo, hi = (0 - spec["mean"][0]) / spec["std"][0], (1 - spec["mean"][0]) / spec["std"][0]
    assert lo - 1e-5 <= x.min() and x.max() <= hi + 1e-5  # a real 8-bit range, not clipped junk
    if stored.startswith("I") and size[0] * size[1] >= 16:
        assert len(np.unique(x)) > 1  # 16-bit values scaled, not all clipped to white
    result = runner.predict(body, k=2)
    probs = [t["probability"] for t in result["top"]]
    assert result["label"] in runner.manifest["labels"] and 1 >= probs[0] >= probs[1] >= 0
