"""The base install alone (`pip install .`, no extras, in a fresh venv) runs the device path:
verify, predict, bench and serve on ONNX artifacts, with torch and onnx absent."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from basevenv import base_venv

from edgekit.benchmark.loadtest import load_test, served

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv with `pip install .` of a copy of this checkout: the base install only."""
    t0 = time.perf_counter()
    python = base_venv(tmp_path_factory.mktemp("base-install"), compile=False)
    print(f"\nbase install: {time.perf_counter() - t0:.1f} s")
    return python


def run(python: Path, *args, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [python, "-c", code] if code else [python, "-m", "edgekit", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_the_base_install_has_no_training_stack(venv):
    proc = run(venv, code="import importlib.util as u; print([m for m in ('torch', 'torchvision',"
                          " 'onnx', 'sklearn') if u.find_spec(m)])")
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr
    assert run(venv, "--version").stdout.startswith("edgekit, version ")


def test_verify_predict_and_bench_without_torch(venv, tiny_run, tmp_path):
    export = tiny_run / "export"
    proc = run(venv, "verify", export)
    listed = json.loads((export / "manifest.json").read_text())["artifacts"]
    assert proc.returncode == 0, proc.stderr
    assert f"ok: {len(listed)} artifact(s) match" in proc.stdout
    proc = run(venv, "predict", export / "model.int8.onnx", tiny_run / "sample.png", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["label"] in [str(i) for i in range(10)]
    proc = run(venv, "predict", export / "model.onnx", tiny_run, "--batch", "8")
    assert proc.returncode == 0 and "inputs/s end to end" in proc.stderr, proc.stderr
    proc = run(venv, "bench", export / "model.onnx", export / "model.int8.onnx", "--runs", "5",
               "--warmup", "1", "--out", tmp_path / "bench.json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((tmp_path / "bench.json").read_text())["results"]) == 2
    proc = run(venv, "predict", export / "model.ts", tiny_run / "sample.png")
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "error: model.ts is TorchScript, which needs torch; install it, or run the .onnx "
        "artifact instead")


def test_serve_without_torch(venv, tiny_run):
    png = (tiny_run / "sample.png").read_bytes()
    with served(tiny_run / "export" / "model.int8.onnx", python=str(venv)) as server:
        report = load_test(server.url, png, "image/png", clients=4, requests=40, deadline=60)
    assert report["errors"] == 0 and report["requests"] == 40, report["error_samples"]
