"""The scoring and input helpers of benchmarks/real_models.py (the real models of issue 23).

The benchmark itself needs the [real] extra and Debian's fluidsynth; these checks need neither.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import real_inputs  # noqa: E402
import real_models  # noqa: E402


def bin_of(hz: float) -> float:
    """The (fractional) CREPE bin of a frequency: torchcrepe.convert's mapping inverted."""
    cents = 1200 * np.log2(hz / 10)
    return (cents - real_models.CENTS_OFFSET) / real_models.CENTS_PER_BIN


@pytest.mark.parametrize("hz", [55.0, 261.63, 440.0, 1318.5])
def test_pitch_decoder_finds_the_frequency_of_a_blurred_peak(hz):
    # CREPE's targets are Gaussians of 25 cents around the true bin; so are these activations.
    bins = np.arange(360)
    activation = np.exp(-((bins - bin_of(hz)) ** 2) / (2 * 1.25 ** 2))[None]  # (1, 360)
    found = real_models.pitch_hz(activation)[0]
    assert abs(1200 * np.log2(found / hz)) < 5


def test_pitch_score_counts_octave_errors_and_agreement():
    truth = [{"hz": 220.0}, {"hz": 220.0}, {"hz": 330.0}]
    bins = np.arange(360)
    peaks = [bin_of(220.0), bin_of(440.0), bin_of(330.0 * 2 ** (30 / 1200))]  # ok, octave, +30c
    out = np.stack([np.exp(-((bins - b) ** 2) / 3.0) for b in peaks])
    score = real_models.score_pitch(out, truth, base=out[[0, 0, 2]])
    assert score["accuracy"] == pytest.approx(2 / 3)
    assert score["octave_errors"] == 1
    assert score["agreement"] == pytest.approx(2 / 3)


def test_direction_score():
    truth = [{"label": "0"}, {"label": "180"}, {"label": "180"}, {"label": "0"}]
    out = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4]])
    score = real_models.score_direction(out, truth, base=np.array([[1, 0], [0, 1], [0, 1],
                                                                   [0, 1]]))
    assert score == {"accuracy": 0.75, "agreement": 0.5}


def test_midi_notes_and_crepe_frames():
    assert real_inputs.midi_hz(69) == 440.0
    assert real_inputs.midi_hz(57) == pytest.approx(220.0)
    frame = real_inputs.crepe_frame(3 + 0.1 * np.sin(np.arange(1024) / 5))
    assert frame.dtype == np.float32 and frame.shape == (1024,)
    assert abs(frame.mean()) < 1e-5 and frame.std(ddof=1) == pytest.approx(1, abs=1e-4)


def test_midi_file_holds_every_note(tmp_path):
    path = tmp_path / "x.mid"
    real_inputs.midi_file(path, 40, [55, 60, 96])
    data = path.read_bytes()
    assert data[:4] == b"MThd" and data[14:18] == b"MTrk"
    (length,) = struct.unpack(">I", data[18:22])
    track = data[22:]
    assert len(track) == length and track.endswith(b"\xff\x2f\x00")
    assert bytes([0xC0, 40]) in track
    for note in (55, 60, 96):
        assert bytes([0x90, note, 100]) in track and bytes([0x80, note, 0]) in track


def test_text_line_is_the_classifiers_input(tmp_path):
    import random

    fonts = real_inputs.fonts()
    rng = random.Random(0)
    upright = real_inputs.line_image("Apache", fonts[0], rng, False)
    assert upright.size == (192, 48) and upright.mode == "RGB"
    pixels = np.asarray(upright)
    assert pixels[:, -1].tolist() == [[128, 128, 128]] * 48  # padded on the right, mid-gray
    assert pixels.min() < 100  # ink


def test_bins_match_torchcrepe():
    convert = pytest.importorskip("torchcrepe.convert")
    import torch

    for hz in (40.0, 110.0, 440.0, 1500.0):
        expected = int(convert.frequency_to_bins(torch.tensor(hz)))
        assert int(np.floor(bin_of(hz))) == expected


def test_an_onnx_source_below_opset_13_is_converted(tmp_path):
    # RapidOCR's models are opset 11 and 12; per-channel int8 writes DequantizeLinear with an
    # `axis`, which needs opset 13, so the copy edgekit keeps is converted (same outputs).
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from edgekit.importer import Inputs
    from edgekit.onnxsource import copy_source

    rng = np.random.default_rng(0)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3],
                                rng.normal(size=108).astype(np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("ReduceSum", ["c"], ["y"], axes=[2, 3], keepdims=0)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [weight])
    old = tmp_path / "old.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)],
                                ir_version=7), str(old))
    source = copy_source(old, tmp_path / "copy.onnx", Inputs())
    assert {o.domain: o.version for o in onnx.load(str(tmp_path / "copy.onnx")).opset_import
            }[""] == 13
    import onnxruntime as ort

    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    expected = ort.InferenceSession(str(old)).run(None, {"x": x})[0]
    np.testing.assert_allclose(source.run(x)["y"], expected, rtol=1e-5, atol=1e-5)
