"""This machine's own GEMM limit: int8 and fp32 multiply-accumulates per second, measured once.

A latency says little by itself: 5 ms for resnet18 is slow on one CPU and the limit on another.
`edgekit bench` divides each artifact's work (its MACs per input, counted at export by
edgekit.macs) by its latency and compares that with what onnxruntime's own GEMM reaches here:

    int8  MatMulInteger, uint8 x int8 -> int32  (the kernel int8 Conv/MatMul layers run on)
    fp32  MatMul, float32 x float32

at the bench's thread count. The result is cached per machine and library version in
$XDG_CACHE_HOME/edgekit/gemm-peak.json (default ~/.cache/edgekit), keyed by CPU, onnxruntime
version and threads, so each bench does not pay for it again.

The two tiny models are written here as protobuf bytes (edgekit.onnxbytes): the base
install has no `onnx` package, and a model built in code cannot drift from what it claims to
measure the way a shipped binary file could. Their operands are inputs, not weights, so the
bytes are a few hundred and nothing is constant-folded away.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgekit.fileio import write_json
from edgekit.machine import cpu_label, machine_info
from edgekit.onnxbytes import (
    FLOAT,
    INT8,
    INT32,
    IR_VERSION,
    OPSET,
    UINT8,
    field,
    model,
    node,
    value_info,
)

SIZE = 1024  # (SIZE x SIZE) @ (SIZE x SIZE): 1.07 G MACs, 3-300 ms per call on CPUs we know
SECONDS = 0.5  # timed per precision, after warm-up
CACHE_FILE = "gemm-peak.json"
KERNELS = {  # precision -> (op, A type, B type, output type, what it is)
    "int8": ("MatMulInteger", UINT8, INT8, INT32, "MatMulInteger uint8 x int8"),
    "fp32": ("MatMul", FLOAT, FLOAT, FLOAT, "MatMul float32"),
}


def gemm_peak(threads: int, *, size: int = SIZE, seconds: float = SECONDS,
              cache: Path | None = None, refresh: bool = False) -> dict:
    """This machine's int8 and fp32 GEMM throughput at `threads`, from the cache or measured.

    Args:
        threads: onnxruntime intra-op threads, as the bench runs the artifacts.
        size: the square GEMM's side (size**3 MACs per call).
        seconds: timing budget per precision.
        cache: the cache file (default cache_path()).
        refresh: measure again even when the cache has this machine.

    A cached peak measured while the machine was busy (1-minute load average above its
    cores) is measured again once the load has halved, and a new measurement only raises the
    cached peak of each precision: a peak is the fastest this machine was ever seen to go.

    Returns:
        {"key", "cpu", "onnxruntime", "threads", "measured", "load_average", "cached": bool,
         "int8": {"gmacs", "ms", "best_ms", "runs", "op", "shape"}, "fp32": {...}}:
        gmacs = size**3 / fastest call's ms / 1e6 (G multiply-accumulates per second).
    """
    import onnxruntime as ort

    facts = machine_info()
    cpu = cpu_label(facts)  # family and model too: one "AMD EPYC" may be a Zen 3 or a Zen 4
    key = "|".join([facts["arch"], cpu, f"onnxruntime {ort.__version__}",
                    f"threads {threads}", f"size {size}"]
                   + (["emulated"] if facts["emulated"] else []))
    path = cache or cache_path()
    known = _read(path)
    load = _load()
    if key in known and not refresh and not _busy_then(known[key], load, facts):
        return {**known[key], "cached": True}
    record = {"key": key, "cpu": cpu, "arch": facts["arch"],
              "emulated": facts["emulated"], "onnxruntime": ort.__version__,
              "threads": threads,
              "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "load_average": load}
    for precision in KERNELS:
        record[precision] = measure_gemm(precision, threads, size, seconds)
    known = _read(path)  # another process may have written meanwhile: keep its entries
    old = known.get(key) or {}
    for precision in KERNELS:  # the peak only rises: keep the faster of the two
        if old.get(precision, {}).get("gmacs", 0) > record[precision]["gmacs"]:
            record[precision] = old[precision]
    known[key] = record
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, known)
    return {**record, "cached": False}


def measure_gemm(precision: str, threads: int, size: int = SIZE,
                 seconds: float = SECONDS) -> dict:
    """Time one square GEMM of `precision` ("int8" or "fp32") with onnxruntime.

    Returns:
        {"gmacs": from the fastest call, "ms": median, "best_ms", "runs", "op", "shape"}.
        The fastest call is the limit: on a shared machine other work only ever slows a
        call down, and a limit measured from the median would move with the machine's load.
    """
    import onnxruntime as ort

    from edgekit.benchmark.stats import measure

    what = KERNELS[precision][-1]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(gemm_model_bytes(precision, size), opts,
                                providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    if precision == "int8":
        a = rng.integers(0, 256, (size, size), dtype=np.uint8)
        b = rng.integers(-128, 128, (size, size), dtype=np.int8)
    else:
        a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    ms = measure(sess.run, None, {"a": a, "b": b}, warmup=2, seconds=seconds, min_runs=3)
    best = float(ms.min())
    # Stored unrounded, so that gmacs == size**3 / best_ms / 1e6 holds on any machine (a
    # rounded GMAC/s of a slow one, 3.8 for 3.7957, broke it); shown rounded where printed.
    return {"gmacs": size ** 3 / best / 1e6, "ms": float(np.median(ms)), "best_ms": best,
            "runs": len(ms), "op": what, "shape": [size, size, size]}


def gemm_model_bytes(precision: str, size: int) -> bytes:
    """A serialized ONNX model y = a @ b with a, b (size, size) inputs of `precision`'s types."""
    op, a_type, b_type, y_type, _ = KERNELS[precision]
    graph = (field(1, node(op, ["a", "b"], ["y"])) + field(2, f"edgekit-peak-{precision}")
             + field(11, value_info("a", (size, size), a_type))
             + field(11, value_info("b", (size, size), b_type))
             + field(12, value_info("y", (size, size), y_type)))
    return model(graph, OPSET, IR_VERSION)


def cache_path() -> Path:
    """$XDG_CACHE_HOME/edgekit/gemm-peak.json, default ~/.cache/edgekit/gemm-peak.json."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgekit" / CACHE_FILE


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _busy_then(entry: dict, load: float | None, facts: dict) -> bool:
    """Whether a cached peak was measured on a busy machine that is now at most half as busy."""
    then = entry.get("load_average")
    if then is None or load is None:
        return False
    return then > facts["usable_cores"] and load <= then / 2


def _read(path: Path) -> dict:
    """The cache's entries; a missing or damaged cache is empty (it is measured again)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
