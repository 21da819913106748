"""edgekit.macs: multiply-accumulates per input, against counts worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from edgekit.exporting.formats.onnx import export_onnx  # noqa: E402
from edgekit.exporting.formats.onnx_int8 import quantize_onnx  # noqa: E402
from edgekit.exporting.int8.scheme import Scheme as Layout  # noqa: E402
from edgekit.macs import count_macs  # noqa: E402
from edgekit.models.lenet import LeNet5  # noqa: E402
from edgekit.models.recurrent import Recurrent  # noqa: E402

# LeNet-5 on a 1x32x32 image, one layer at a time: (outputs) x (products per output).
LENET5_MACS = (
    6 * 28 * 28 * (1 * 5 * 5)  # conv1: 6 maps of 28x28, each 1 channel x 5x5     = 117,600
    + 16 * 10 * 10 * (6 * 5 * 5)  # conv2: 16 maps of 10x10, each 6 channels x 5x5 = 240,000
    + 400 * 120  # fc1                                                            =  48,000
    + 120 * 84  # fc2                                                             =  10,080
    + 84 * 10  # fc3                                                              =     840
)  # = 416,520

# A 2-layer LSTM, 5 features -> hidden 8, over 7 steps, then a Linear(8, 3) on every step.
# One LSTM step: 4 gates x (W_i x_t: I*H + W_h h_t: H*H).
STEPS, FEATURES, HIDDEN, OUTPUTS = 7, 5, 8, 3
LSTM_MACS = (
    STEPS * 4 * (FEATURES * HIDDEN + HIDDEN * HIDDEN)  # layer 1: 7 x 4 x (40 + 64) = 2,912
    + STEPS * 4 * (HIDDEN * HIDDEN + HIDDEN * HIDDEN)  # layer 2: 7 x 4 x (64 + 64) = 3,584
    + STEPS * HIDDEN * OUTPUTS  # the head on each step: 7 x 8 x 3             =   168
)  # = 6,664

INT8_LAYOUTS = {  # every way edgekit writes an int8 ONNX model
    "qdq-u8s8": Layout("static", "qdq", "uint8", "int8"),
    "qop-u8s8": Layout("static", "qoperator", "uint8", "int8"),  # QLinearConv, QGemm
    "dynamic": Layout("dynamic", activations="uint8"),  # ConvInteger, MatMulInteger
}


def _onnx(model, example, path):
    torch.manual_seed(0)
    return export_onnx(model.eval(), example, path, 18, {})


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    torch.manual_seed(0)
    return _onnx(LeNet5(10, 1), torch.randn(2, 1, 32, 32),
                 tmp_path_factory.mktemp("macs") / "lenet5.onnx")


@pytest.fixture(scope="module")
def lstm(tmp_path_factory):
    torch.manual_seed(0)
    model = Recurrent("lstm", FEATURES, HIDDEN, layers=2, num_outputs=OUTPUTS)
    return _onnx(model, torch.randn(2, STEPS, FEATURES),
                 tmp_path_factory.mktemp("macs") / "lstm.onnx")


def test_lenet5_counts_its_hand_count(lenet):
    got = count_macs(lenet)
    assert got["per_input"] == LENET5_MACS
    assert got["by_op"] == {"Conv": 117_600 + 240_000, "Gemm": 48_000 + 10_080 + 840}
    assert got["uncounted"] == []


def test_lstm_counts_every_gate_and_step(lstm):
    got = count_macs(lstm)
    assert got["per_input"] == LSTM_MACS
    assert got["by_op"]["LSTM"] == 2_912 + 3_584
    assert got["uncounted"] == []


@pytest.mark.parametrize("layout", INT8_LAYOUTS, ids=list(INT8_LAYOUTS))
@pytest.mark.parametrize("which", ["lenet", "lstm"])
def test_int8_counts_as_fp32(which, layout, request, tmp_path):
    fp32 = request.getfixturevalue(which)
    x = np.random.default_rng(0).standard_normal(
        (8, 1, 32, 32) if which == "lenet" else (8, STEPS, FEATURES)).astype(np.float32)
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", INT8_LAYOUTS[layout], x, "minmax", [], {})
    got = count_macs(int8)
    assert got["uncounted"] == []
    assert got["per_input"] == count_macs(fp32)["per_input"]


def test_depthwise_grouped_and_transposed_conv(tmp_path):
    """Grouped convs take C/groups channels per output; a transposed conv spreads each input."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: 8x16x16 outputs x 9
        torch.nn.Conv2d(8, 4, 1, groups=2),  # grouped 1x1: 4x16x16 outputs x (8/2)
        torch.nn.ConvTranspose2d(4, 2, 2, stride=2),  # 4x16x16 inputs x (2 x 2x2)
    )
    path = _onnx(model, torch.randn(2, 8, 16, 16), tmp_path / "convs.onnx")
    assert count_macs(path)["per_input"] == (8 * 16 * 16 * 9 + 4 * 16 * 16 * 4
                                             + 4 * 16 * 16 * 2 * 2 * 2)
