"""`edgekit doctor`: its int8 self-test, its crash diagnosis (a simulated SIGILL), its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit import doctor, selftest
from edgekit.machine import cpu_name, isa_features

CPUINFO = Path(__file__).parent / "data" / "cpuinfo"


def pi_facts(cpu: str) -> dict:
    """machine_info() as an emulated Pi core reports it (from recorded qemu cpuinfo)."""
    text = (CPUINFO / f"aarch64-qemu-{cpu.lower()}.txt").read_text()
    return {"arch": "aarch64", "cpu": cpu_name(text, "aarch64"), "cores": 4,
            "isa": isa_features(text, "aarch64"), "board": "Raspberry Pi 4 Model B Rev 1.4",
            "pi": {"temperature_c": 71.5, "throttled": "0x0", "throttle_flags": []},
            "governor": "ondemand", "emulated": False}


def fake_torch(tmp_path: Path, version: str, body: str) -> Path:
    """A `torch` package (with dist-info) whose import runs `body`: a wheel that crashes."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(body)
    info = tmp_path / f"torch-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
    return tmp_path


def doctor_cli(*args, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath),
                                                          env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "edgekit", "doctor", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_int8_selftest_model_is_valid_onnx():
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(selftest.int8_model_bytes(selftest.int8_case()))
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["QuantizeLinear", "DequantizeLinear", "DequantizeLinear", "Conv",
                   "QuantizeLinear", "DequantizeLinear"]
    weights = {t.name: t for t in model.graph.initializer}["w_q"]
    assert weights.data_type == onnx.TensorProto.INT8 and list(weights.dims) == [32, 64, 3, 3]


def test_int8_selftest_matches_numpy_here():
    result = selftest.check_onnxruntime()
    assert result["ok"] and result["max_error_steps"] <= 1


def test_int8_selftest_fails_on_a_wrong_result(monkeypatch):
    real = selftest.int8_case

    def off_by_three(seed=0, weight_bits=8):  # as if the int8 kernels computed something else
        case = real(seed, weight_bits)
        case["expected_q"] = np.clip(case["expected_q"].astype(int) + 3, -128, 127)
        return case

    monkeypatch.setattr(selftest, "int8_case", off_by_three)
    result = selftest.check_onnxruntime()
    assert not result["ok"] and result["max_error_steps"] >= 2


def test_reference_conv_is_a_convolution():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1  # a centred impulse reproduces the (flipped) kernel
    w = np.arange(9.0).reshape(1, 1, 3, 3)
    assert np.array_equal(selftest.conv3x3(x, w)[0, 0], w[0, 0, ::-1, ::-1])


def test_simulated_sigill_becomes_one_diagnosis_line(tmp_path):
    fake = fake_torch(tmp_path, "2.10.0",
                      "import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n")
    proc = doctor_cli(pythonpath=fake)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[fail] torch        2.10.0: torch crashed with SIGILL (Illegal instruction)" \
        in proc.stdout
    diagnosis = [line for line in proc.stdout.splitlines() if line.startswith("diagnosis:")]
    assert len(diagnosis) == 1
    assert diagnosis[0].startswith('diagnosis: torch 2.10.0 dies with "Illegal instruction" '
                                   "(SIGILL) at `import torch` on this ")
    assert "[  ok] onnxruntime" in proc.stdout  # the doctor itself survived the crash


def test_simulated_sigill_in_the_first_op_is_placed_there(tmp_path):
    body = ("import os, signal, types\n"
            "def _die(*a, **k):\n    os.kill(os.getpid(), signal.SIGILL)\n"
            "nn = types.SimpleNamespace(functional=types.SimpleNamespace(conv2d=_die))\n"
            "ones = lambda *s: None\n")
    proc = doctor_cli("--json", pythonpath=fake_torch(tmp_path, "2.6.0", body))
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and not report["ok"]
    assert "at its first conv" in report["diagnosis"][0]


def test_a_torch_that_raises_is_reported_not_diagnosed_as_sigill(tmp_path):
    fake = fake_torch(tmp_path, "2.9.1", "raise ImportError('libopenblas.so.0: cannot open')\n")
    proc = doctor_cli("--json", pythonpath=fake)
    report = json.loads(proc.stdout)
    torch = {c["name"]: c for c in report["checks"]}["torch"]
    assert torch["status"] == "fail" and "libopenblas.so.0" in torch["detail"]
    assert "SIGILL" not in report["diagnosis"][0]


@pytest.mark.parametrize("returncode", [-4, 132])
def test_pi4_sigill_names_the_versions_that_work(returncode):
    run = {"returncode": returncode, "stage": "import", "why": "torch crashed with SIGILL"}
    line = doctor.crash_line("torch", "2.10.0", run, pi_facts("Cortex-A72"))
    assert line == (
        'torch 2.10.0 dies with "Illegal instruction" (SIGILL) at `import torch` on this '
        "Cortex-A72: the wheel was built for instructions this CPU lacks; versions known to work "
        "on Cortex-A72: 2.9.1 (pip install 'torch==2.9.1' --index-url "
        "https://download.pytorch.org/whl/cpu), or build one with pi/build_pytorch.sh; the .onnx "
        "artifacts need no torch.")


def test_an_unknown_arm_core_is_matched_by_its_features():
    facts = pi_facts("Cortex-A76")
    assert facts["cpu"] == "Cortex-A76" and facts["isa"]["dotprod"]
    facts["cpu"] = "ARM implementer 0x41 part 0xd99"
    assert doctor.torch_on(facts)["core"] == "Cortex-A76"
    facts["isa"]["dotprod"] = False
    assert doctor.torch_on(facts)["core"] == "Cortex-A72"


def test_signal_numbers_from_subprocess_and_shell():
    assert doctor.signal_of(-4) == doctor.signal_of(132) == "SIGILL"
    assert doctor.signal_of(-11) == "SIGSEGV"
    assert doctor.signal_of(1) is None and doctor.signal_of(0) is None


def test_pi_board_throttling_and_governor_are_warnings():
    facts = pi_facts("Cortex-A72")
    assert doctor.board_check(facts)["status"] == "ok"
    assert "71.5 C; not throttled" in doctor.board_check(facts)["detail"]
    facts["pi"]["throttle_flags"] = ["under-voltage", "throttled"]
    board = doctor.board_check(facts)
    assert board["status"] == "warn" and "under-voltage, throttled" in board["detail"]
    assert doctor.governor_check(facts)["status"] == "warn"
    facts["governor"] = "performance"
    assert doctor.governor_check(facts)["status"] == "ok"
    cpu = doctor.cpu_check(facts)
    assert cpu["status"] == "ok" and "no dotprod" in cpu["detail"]


def test_doctor_json_on_this_machine():
    proc = doctor_cli("--json")
    report = json.loads(proc.stdout)
    names = [c["name"] for c in report["checks"]]
    assert names[:3] == ["cpu", "board", "governor"]
    assert names[-3:] == ["onnxruntime", "torch", "executorch"]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["onnxruntime"]["status"] == "ok"
    # This machine has the training extra: torch imports and runs, so nothing fails.
    assert checks["torch"]["status"] == "ok", checks["torch"]
    assert checks["executorch"]["status"] == "ok", checks["executorch"]  # the pte extra
    assert report["ok"] and report["diagnosis"] == [] and proc.returncode == 0


CUDA_REQUIRES = ['cuda-toolkit[cublas,cudart]==13.0.3; platform_system == "Linux"',
                 'nvidia-cudnn-cu13==9.13.0.50; platform_system == "Linux"', "filelock"]
# PyPI's aarch64 CPU wheels (2.9.1, 2.10.0) list CUDA packages for x86_64 only.
CPU_REQUIRES = ["filelock", "typing-extensions>=4.10.0", "sympy>=1.13.3",
                'nvidia-cuda-nvrtc-cu12==12.8.93; platform_system == "Linux" and '
                'platform_machine == "x86_64"', 'torch-extra; extra == "optree"']
TORCH_OK = {"ok": True, "version": "2.14.1", "quantized_engines": ["qnnpack"], "threads": 4}


@pytest.mark.parametrize(("version", "requires", "flagged"), [
    ("2.14.1", CUDA_REQUIRES, True),  # PyPI's aarch64 wheel: needs cuda-toolkit
    ("2.9.1+cu128", CPU_REQUIRES, True),  # a +cu local version
    ("2.9.1", CPU_REQUIRES, False),  # PyPI's aarch64 2.9.1: a CPU build
    ("2.9.1+cpu", CPU_REQUIRES, False),
])
def test_a_cuda_torch_on_a_pi_gets_one_line_naming_the_cpu_wheel(version, requires, flagged,
                                                                  monkeypatch):
    monkeypatch.setattr(doctor, "nvidia_gpu", lambda: False)
    line = doctor.cuda_on_arm(version, pi_facts("Cortex-A72"), requires)
    if not flagged:
        assert line is None
        return
    assert line == (f"torch {version} is a CUDA build (it needs the CUDA libraries, gigabytes "
                    "this machine has no GPU for): pip uninstall torch, then pip install "
                    f"'torch=={doctor.TORCH_FOR_PI}' --index-url "
                    "https://download.pytorch.org/whl/cpu")
    x86 = {**pi_facts("Cortex-A72"), "arch": "x86_64"}
    assert doctor.cuda_on_arm(version, x86, requires) is None  # a GPU box may want CUDA
    monkeypatch.setattr(doctor, "nvidia_gpu", lambda: True)  # a Jetson: CUDA is right there
    assert doctor.cuda_on_arm(version, pi_facts("Cortex-A72"), requires) is None


@pytest.mark.parametrize("runs", [True, False])
def test_torch_check_flags_a_cuda_build_whether_or_not_it_imports(runs, monkeypatch):
    """Installed with its CUDA packages it imports (warn); without them it fails (fail)."""
    monkeypatch.setattr(doctor, "nvidia_gpu", lambda: False)
    monkeypatch.setattr(doctor, "installed", lambda dist: "2.14.1")
    monkeypatch.setattr(doctor.metadata, "requires", lambda dist: CUDA_REQUIRES)
    result = {"result": TORCH_OK, "returncode": 0, "stage": "ops"} if runs else {
        "result": None, "returncode": 1, "stage": "import",
        "why": "torch self-test failed (exit 1): ImportError: libcudart.so.13: cannot open"}
    monkeypatch.setattr(doctor, "selftest", lambda name, timeout: result)
    got = doctor.torch_check(pi_facts("Cortex-A72"), timeout=10)
    assert got["status"] == ("warn" if runs else "fail")
    assert got["diagnosis"].startswith("torch 2.14.1 is a CUDA build")


def test_onnxruntime_1_21_0_is_flagged_on_arm(monkeypatch):
    monkeypatch.setattr(doctor, "installed", lambda dist: "1.21.0")
    got = doctor.onnxruntime_check(pi_facts("Cortex-A76"), timeout=60)  # runs here: a warning
    assert got["status"] == "warn"
    assert got["diagnosis"] == (
        'onnxruntime 1.21.0 dies with "Illegal instruction" at import on a Pi 4 '
        "(onnxruntime#23957, #24512): pip install 'onnxruntime>=1.20,!=1.21.0' "
        "(pi/install.sh does).")
    x86 = {**pi_facts("Cortex-A76"), "arch": "x86_64"}
    assert doctor.known_bad_onnxruntime("1.21.0", x86) is None
    assert doctor.known_bad_onnxruntime("1.21.1", pi_facts("Cortex-A72")) is None


def test_no_install_path_can_resolve_a_known_bad_onnxruntime():
    """pyproject.toml, pi/install.sh and Dockerfile.arm64 all exclude doctor's bad releases."""
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    root = Path(__file__).parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    req = next(Requirement(d) for d in deps if Requirement(d).name == "onnxruntime")
    assert req == Requirement(doctor.ONNXRUNTIME_SPEC)
    for bad in doctor.ONNXRUNTIME_BAD:
        assert not req.specifier.contains(bad)
    assert all(req.specifier.contains(v) for v in ("1.20.1", "1.21.1", "1.32.0"))
    for script in ("pi/install.sh", "Dockerfile.arm64"):
        assert f"'{doctor.ONNXRUNTIME_SPEC}'" in (root / script).read_text(), script


@pytest.mark.parametrize(("wheel", "cuda"), [
    ("torch-2.9.1-cp311-manylinux_2_28_aarch64", False),
    ("torch-2.10.0-cp311-manylinux_2_28_aarch64", False),
    ("torch-2.14.1-cp311-manylinux_2_28_aarch64", True),
])
def test_pypi_aarch64_wheels_real_requires(wheel, cuda, monkeypatch):
    """The Requires-Dist of PyPI's aarch64 wheels (tests/data/torch-requires, from their
    METADATA): the CPU builds name CUDA packages for x86_64 only; 2.14.1 needs CUDA 13."""
    monkeypatch.setattr(doctor, "nvidia_gpu", lambda: False)
    requires = (Path(__file__).parent / "data" / "torch-requires" / f"{wheel}.txt").read_text()
    version = wheel.split("-")[1]
    line = doctor.cuda_on_arm(version, pi_facts("Cortex-A72"), requires.splitlines())
    assert (line is not None) == cuda
    assert (version in doctor.TORCH_PYPI_AARCH64_CUDA) == cuda
