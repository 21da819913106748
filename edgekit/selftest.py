"""Self-tests that `edgekit doctor` runs in a child process, so a crash cannot take it down.

    python -m edgekit.selftest onnxruntime   # a tiny int8 ONNX model vs its numpy reference
    python -m edgekit.selftest torch         # import torch, its engines, one conv and one linear
    python -m edgekit.selftest executorch    # import ExecuTorch's runtime, its backends

Each prints one JSON object on stdout. A wheel built for a newer CPU dies here with
"Illegal instruction" (SIGILL) instead of inside the user's program; the parent reads the exit
status. The int8 model is written in code (edgekit.onnxbytes: a few protobuf fields, no `onnx`
package needed) so the check runs on the base install, and its expected output comes from
numpy, not from a file.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from edgekit.onnxbytes import IR_VERSION, OPSET, field, model, node, tensor, value_info

# The int8 layer: a 3x3 conv, 64 -> 32 channels on an 8x8 map. 64 input channels and int8
# per-channel weights with zero points 0 are what onnxruntime's fast symmetric int8 conv
# kernels need (SDOT on Cortex-A76, NEON on Cortex-A72, VNNI/AVX2 on x86).
C_IN, C_OUT, SIZE = 64, 32, 8
X_SCALE = 1 / 64  # a power of two: inputs built from int8 codes quantize exactly



def int8_case(seed: int = 0, weight_bits: int = 8) -> dict:
    """The int8 model's data: input, int8 weights, scales and the expected int8 output codes.

    Args:
        weight_bits: 8 (full-range int8 weights), or 7 as int8 export writes them where the
            CPU's int8 kernels would saturate on full-range weights (see `weight_bits_here`).

    Returns:
        {"x": (1, 64, 8, 8) float32, "w_q": (32, 64, 3, 3) int8, "w_scale": (32,) float32,
         "y_scale": float, "expected_q": (1, 32, 8, 8) int8}.
    """
    rng = np.random.default_rng(seed)
    x_q = rng.integers(-100, 101, size=(1, C_IN, SIZE, SIZE))
    top = 2 ** (weight_bits - 1) - 1  # 127, or 63 for 7-bit weights
    w_q = rng.integers(-top, top + 1, size=(C_OUT, C_IN, 3, 3)).astype(np.int8)
    w_scale = (2.0 ** -rng.integers(6, 10, size=C_OUT)).astype(np.float32)
    x = (x_q * X_SCALE).astype(np.float32)
    w = w_q.astype(np.float64) * w_scale[:, None, None, None]
    y = conv3x3(x.astype(np.float64), w)  # (1, 32, 8, 8), exact in float64
    y_scale = float(np.float32(np.abs(y).max() / 127))
    expected_q = np.clip(np.rint(y / y_scale), -128, 127).astype(np.int8)
    return {"x": x, "w_q": w_q, "w_scale": w_scale, "y_scale": y_scale,
            "expected_q": expected_q}


def conv3x3(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Reference conv, stride 1, padding 1: x (1, C, H, W), w (O, C, 3, 3) -> (1, O, H, W)."""
    padded = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    return np.einsum("chwkl,ockl->ohw", windows, w)[None]  # windows: (C, H, W, 3, 3)


def int8_model_bytes(case: dict) -> bytes:
    """A serialized ONNX model: x -> Q/DQ -> Conv(DQ(int8 weights)) -> Q/DQ -> y.

    The QDQ pattern is what `edgekit export --int8` writes; onnxruntime fuses it into one
    QLinearConv, so this runs the same int8 kernels as an exported model.
    """
    def scalar(name, value, dtype):
        return tensor(name, np.asarray(value, dtype=dtype))

    inits = [scalar("x_scale", X_SCALE, np.float32), scalar("x_zp", 0, np.int8),
             tensor("w_q", case["w_q"]), tensor("w_scale", case["w_scale"]),
             tensor("w_zp", np.zeros(C_OUT, np.int8)),
             scalar("y_scale", case["y_scale"], np.float32), scalar("y_zp", 0, np.int8)]
    nodes = [node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"]),
             node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"]),
             node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], axis=0),
             node("Conv", ["x_dq", "w_dq"], ["conv"], pads=[1, 1, 1, 1]),
             node("QuantizeLinear", ["conv", "y_scale", "y_zp"], ["y_q"]),
             node("DequantizeLinear", ["y_q", "y_scale", "y_zp"], ["y"])]
    graph = (b"".join(field(1, n) for n in nodes) + field(2, b"edgekit-selftest")
             + b"".join(field(5, t) for t in inits)
             + field(11, value_info("x", (1, C_IN, SIZE, SIZE)))
             + field(12, value_info("y", (1, C_OUT, SIZE, SIZE))))
    return model(graph, OPSET, IR_VERSION)


def weight_bits_here() -> int:
    """7 on an x86 CPU without VNNI, else 8: there onnxruntime's u8s8 kernels (VPMADDUBSW) add
    pairs of int8 products in int16, which full-range weights overflow (measured: 28 steps off
    on an AMD EPYC Zen 3), so export reduces the weights' range (int8.targets, reduce_range)
    and the self-test checks the kernels as export uses them."""
    import platform

    from edgekit.machine import isa_features

    arch = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            cpuinfo = f.read()
    except OSError:
        return 8
    x86 = arch in ("x86_64", "AMD64", "amd64")
    return 7 if x86 and not isa_features(cpuinfo, arch).get("vnni") else 8


def check_onnxruntime() -> dict:
    """Run the int8 model with onnxruntime; compare with numpy. Returns facts + "ok"."""
    import onnxruntime as ort

    from edgekit.benchmark.stats import measure

    bits = weight_bits_here()
    case = int8_case(weight_bits=bits)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(int8_model_bytes(case), opts,
                                providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": case["x"]})[0]  # (1, 32, 8, 8) float32 on the int8 grid
    # onnxruntime requantizes in float32, numpy in float64: a code may differ by one step.
    steps = float(np.abs(y / case["y_scale"] - case["expected_q"]).max())
    ms = measure(sess.run, None, {"x": case["x"]}, runs=20, warmup=3)
    return {"ok": steps <= 1.0 + 1e-3, "version": ort.__version__, "weight_bits": bits,
            "providers": ort.get_available_providers(), "max_error_steps": steps,
            "int8_conv_ms": float(np.median(ms))}


def check_torch() -> dict:
    """Import torch, list its quantized engines, run one conv and one linear. Returns facts."""
    print("stage: import", file=sys.stderr, flush=True)  # tells the parent where a crash hit
    import torch

    print("stage: ops", file=sys.stderr, flush=True)
    conv = torch.nn.functional.conv2d(torch.ones(1, 3, 8, 8), torch.ones(4, 3, 3, 3))
    linear = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
    # Every conv output is 27 (3 channels x 3 x 3 ones) over a 6x6 map; every linear one is 3.
    ok = conv.shape == (1, 4, 6, 6) and float(conv.sum()) == 27 * 4 * 36 \
        and float(linear.sum()) == 24
    return {"ok": bool(ok), "version": torch.__version__,
            "quantized_engines": list(torch.backends.quantized.supported_engines),
            "threads": torch.get_num_threads()}


def check_executorch() -> dict:
    """Import ExecuTorch's Python runtime (it links libtorch) and list its backends."""
    print("stage: import", file=sys.stderr, flush=True)
    import logging

    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao's notice
    from importlib.metadata import version

    from executorch.extension.pybindings import portable_lib

    backends = sorted(portable_lib._get_registered_backend_names())
    return {"ok": "XnnpackBackend" in backends, "version": version("executorch"),
            "backends": backends}


CHECKS = {"onnxruntime": check_onnxruntime, "torch": check_torch,
          "executorch": check_executorch}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CHECKS:
        sys.exit(f"usage: python -m edgekit.selftest {{{','.join(CHECKS)}}}")
    print(json.dumps(CHECKS[sys.argv[1]]()))
