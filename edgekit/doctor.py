"""`edgekit doctor`: will this machine run edgekit well, and if not, what to do about it.

Facts first (CPU and its int8 features, board, throttling, governor, emulation, installed
versions), then two self-tests, each in its own process (`python -m edgekit.selftest ...`):
a tiny int8 ONNX inference checked against numpy, and, if torch is installed, `import torch`
plus one conv. A wheel built for a newer CPU dies there with "Illegal instruction" (SIGILL);
the doctor turns that into one line naming the wheel and the versions known to work on this CPU.

    report = diagnose()
    report["ok"]          # False if any check failed
    report["checks"]      # [{"name", "status": ok|warn|fail|skip, "detail", ...}]
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from importlib import metadata

from edgekit.machine import cpu_label, machine_info

STATUSES = ("ok", "warn", "fail", "skip")

# aarch64 torch wheels on PyPI against the Pi's cores. "sigill": reported to die with
# "Illegal instruction" on a Pi 4 (Cortex-A72, ARMv8.0, no dot product); "works": imported and
# ran conv/linear/TorchScript under qemu-user -cpu cortex-a72 / cortex-a76 in edgekit's CI.
TORCH_ON_ARM = {
    "Cortex-A72": {"sigill": ("2.0.0", "2.1.0", "2.4.0", "2.6.0", "2.10.0"), "works": ("2.9.1",)},
    "Cortex-A76": {"sigill": (), "works": ("2.9.1", "2.10.0")},
}
# The CPU-only index: torch from PyPI on aarch64 pulls in CUDA packages from 2.11 on.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# The newest torch that ran on both Pi cores (pi/README.md has the table and the commands).
TORCH_FOR_PI = "2.9.1"
# The ExecuTorch release for that torch (built against 2.9; it runs programs executorch 1.5.1
# exports), installed with --no-deps plus these modules: pi/README.md has the pairs tried.
EXECUTORCH_FOR_PI = "1.0.1"
EXECUTORCH_PI_DEPS = ("ruamel.yaml", "flatbuffers", "tabulate", "packaging")
# PyPI's aarch64 cp311 torch wheels whose METADATA requires cuda-toolkit (CUDA 13), checked
# 2026-11-29: a Pi that runs `pip install torch` gets gigabytes it cannot use.
TORCH_PYPI_AARCH64_CUDA = ("2.11.0", "2.12.0", "2.12.1", "2.13.0", "2.14.0", "2.14.1")
# onnxruntime releases known to die on a Pi; pyproject.toml, pi/install.sh and Dockerfile.arm64
# exclude them too.
ONNXRUNTIME_BAD = {
    "1.21.0": "dies with \"Illegal instruction\" at import on a Pi 4 (onnxruntime#23957, #24512)",
}
ONNXRUNTIME_SPEC = "onnxruntime>=1.20,!=1.21.0"

# Child processes: importing torch takes ~2 s on a Pi 5 but ~20 s under qemu emulation.
TIMEOUT_S = 600


def diagnose(timeout: float = TIMEOUT_S) -> dict:
    """Check this machine. Never raises for what it finds: failures become "fail" checks.

    Args:
        timeout: seconds each self-test process may take.

    Returns:
        {"ok": bool, "machine": machine_info(), "checks": [...], "diagnosis": [one-liners]}.
    """
    facts = machine_info()
    checks = [cpu_check(facts), board_check(facts), governor_check(facts)]
    if facts["emulated"]:
        checks.append(check("emulation", "warn", "running under qemu-user emulation: timings "
                            "here are not ARM timings"))
    checks.append(onnxruntime_check(facts, timeout))
    checks.append(torch_check(facts, timeout))
    checks.append(executorch_check(facts, timeout, torch_ok=checks[-1]["status"] != "fail"))
    diagnosis = [c["diagnosis"] for c in checks if c.get("diagnosis")]
    return {"ok": all(c["status"] != "fail" for c in checks), "machine": facts,
            "checks": checks, "diagnosis": diagnosis}


def check(name: str, status: str, detail: str, **extra) -> dict:
    assert status in STATUSES, status
    return {"name": name, "status": status, "detail": detail, **extra}


def cpu_check(facts: dict) -> dict:
    """The CPU and the int8 features that decide which kernels onnxruntime and torch use."""
    isa = facts["isa"]
    have = [name for name, on in isa.items() if on]
    detail = f"{facts['arch']} {cpu_label(facts)}, {facts['cores']} cores; " \
             f"features: {', '.join(have) or 'none detected'}"
    if facts["arch"] in ("aarch64", "arm64"):
        if not isa.get("dotprod"):
            return check("cpu", "ok", detail + " (no dotprod: int8 runs on NEON kernels, as on "
                         "a Pi 4; a Pi 5's Cortex-A76 has SDOT/UDOT)")
        return check("cpu", "ok", detail)
    if facts["arch"] == "x86_64" and not isa.get("avx2"):
        return check("cpu", "warn", detail + " (no AVX2: onnxruntime falls back to SSE kernels)")
    return check("cpu", "ok", detail)


def board_check(facts: dict) -> dict:
    """The board, and on a Pi its temperature and the firmware's throttling flags."""
    board, pi = facts["board"] or "not a Raspberry Pi (no device-tree model)", facts["pi"]
    if not pi:
        return check("board", "ok", board)
    temp = pi.get("temperature_c")
    detail = board + (f", {temp:.1f} C" if temp is not None else "")
    flags = pi.get("throttle_flags") or []
    if flags:
        return check("board", "warn", f"{detail}; throttling: {', '.join(flags)} "
                     "(use the official power supply and a heatsink or fan; see pi/README.md)")
    return check("board", "ok", detail + "; not throttled")


def governor_check(facts: dict) -> dict:
    """The CPU frequency governor: anything but "performance" adds ramp-up to benchmarks."""
    gov = facts.get("governor")
    if gov is None:
        return check("governor", "skip", "no cpufreq governor exposed")
    if gov != "performance":
        return check("governor", "warn", f"{gov}: benchmarks include frequency ramp-up; for "
                     "`edgekit bench` set performance (see pi/README.md)", governor=gov)
    return check("governor", "ok", gov, governor=gov)


def onnxruntime_check(facts: dict, timeout: float) -> dict:
    """A tiny int8 conv through onnxruntime, in a child process, compared with numpy."""
    version = installed("onnxruntime")
    if version is None:
        return check("onnxruntime", "fail", "onnxruntime is not installed: it is edgekit's "
                     "runtime (pip install edgekit, or pi/install.sh on a Pi)")
    run = selftest("onnxruntime", timeout)
    bad = known_bad_onnxruntime(version, facts)
    if run["result"] is None:
        return check("onnxruntime", "fail", f"{version}: {run['why']}", version=version,
                     diagnosis=bad or crash_line("onnxruntime", version, run, facts))
    r = run["result"]
    if bad:  # it ran here (another core, emulation): the same install on a Pi 4 will not
        return check("onnxruntime", "warn", f"{version}: known bad on a Pi", diagnosis=bad, **r)
    if not r["ok"]:
        return check("onnxruntime", "fail", f"onnxruntime {version}: the int8 conv is off by "
                     f"{r['max_error_steps']:.1f} quantization steps (expected <= 1): this "
                     "build computes wrong int8 results on this CPU", **r)
    seven = ("7-bit weights, as export writes them on x86 without VNNI; "
             if r.get("weight_bits") == 7 else "")
    return check("onnxruntime", "ok", f"{version}; int8 conv matches numpy ({seven}"
                 f"{r['int8_conv_ms']:.3f} ms, 1 thread); providers: "
                 f"{', '.join(r['providers'])}", **r)


def torch_check(facts: dict, timeout: float) -> dict:
    """`import torch` and one conv in a child process, if torch is installed."""
    version = installed("torch")
    if version is None:
        return check("torch", "skip", "not installed: only TorchScript (.ts) artifacts need it; "
                     "the .onnx ones run without it")
    run = selftest("torch", timeout)
    cuda = cuda_on_arm(version, facts)
    if run["result"] is None:
        return check("torch", "fail", f"{version}: {run['why']}", version=version,
                     diagnosis=cuda or crash_line("torch", version, run, facts))
    r = run["result"]
    if cuda:
        return check("torch", "warn", f"{r['version']}: a CUDA build on a machine without an "
                     "NVIDIA GPU", diagnosis=cuda, **r)
    engines = ", ".join(r["quantized_engines"])
    if not r["ok"]:
        return check("torch", "fail", f"torch {r['version']}: conv2d/linear gave wrong results "
                     "on this CPU", **r)
    if facts["arch"] in ("aarch64", "arm64") and "qnnpack" not in r["quantized_engines"]:
        return check("torch", "warn", f"{r['version']}; quantized engines: {engines} (no "
                     "qnnpack: TorchScript int8 models for ARM will not run)", **r)
    return check("torch", "ok", f"{r['version']}; conv2d and linear run; quantized engines: "
                 f"{engines}", **r)


def executorch_check(facts: dict, timeout: float, torch_ok: bool = True) -> dict:
    """ExecuTorch's runtime (for .pte) in a child process, if executorch is installed."""
    version = installed("executorch")
    if version is None:
        return check("executorch", "skip", "not installed: only ExecuTorch (.pte) artifacts need "
                     "it (pip install 'edgekit[pte]', which brings torch too)")
    if not torch_ok:  # its runtime links libtorch: it fails where torch does
        return check("executorch", "skip", f"{version} installed, but its runtime links "
                     "libtorch, which failed above: .pte cannot run here until torch does")
    run = selftest("executorch", timeout)
    if run["result"] is None:
        return check("executorch", "fail", f"{version}: {run['why']}", version=version,
                     diagnosis=crash_line("executorch", version, run, facts))
    r = run["result"]
    if not r["ok"]:
        return check("executorch", "fail", f"executorch {version} has no XNNPACK backend "
                     f"(backends: {', '.join(r['backends']) or 'none'}): .pte cannot run here",
                     version=version)
    backends = ", ".join(r["backends"])
    from edgekit.runtime import cpuinfo_layout

    why = cpuinfo_layout.diagnosis()
    if why:  # pte.py refuses those files in the same words, before they can crash
        return check("executorch", "warn", f"{version}; backends: {backends}; int8 .pte "
                     "refused here (see the diagnosis)", version=version, diagnosis=why)
    return check("executorch", "ok", f"{version}; backends: {backends}", version=version)


def known_bad_onnxruntime(version: str, facts: dict) -> str | None:
    """One line when this onnxruntime is a release known to die on a Pi (on ARM only)."""
    if version not in ONNXRUNTIME_BAD or facts["arch"] not in ("aarch64", "arm64"):
        return None
    return (f"onnxruntime {version} {ONNXRUNTIME_BAD[version]}: pip install "
            f"'{ONNXRUNTIME_SPEC}' (pi/install.sh does).")


def cuda_on_arm(version: str, facts: dict, requires: list[str] | None = None) -> str | None:
    """One line when torch is a CUDA build on an ARM machine with no NVIDIA GPU (a Pi).

    Read from the installed metadata (its Requires-Dist names cuda-toolkit or nvidia-*
    packages, or the version says +cuXXX), not by importing torch, which may crash.
    """
    if facts["arch"] not in ("aarch64", "arm64") or nvidia_gpu():
        return None
    if requires is None:
        try:
            requires = metadata.requires("torch") or []
        except metadata.PackageNotFoundError:
            requires = []
    names = required_here(requires, facts["arch"])
    if "+cu" not in version and not any(n.startswith(("cuda-", "nvidia-")) for n in names):
        return None
    return (f"torch {version} is a CUDA build (it needs the CUDA libraries, gigabytes this "
            f"machine has no GPU for): pip uninstall torch, then pip install "
            f"'torch=={TORCH_FOR_PI}' --index-url {TORCH_CPU_INDEX}")


def required_here(requires: list[str], arch: str) -> list[str]:
    """Names of the Requires-Dist entries whose markers hold on an `arch` Linux machine.

    PyPI's aarch64 CPU wheels list CUDA packages too, for x86_64 only
    (`nvidia-...; platform_machine == "x86_64"`): those do not make a CUDA build.
    """
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # onnxruntime needs packaging, so this is rare: read names only
        return [r.split(";")[0].strip().lower() for r in requires
                if "platform_machine" not in r]
    env = {"platform_machine": arch, "platform_system": "Linux", "sys_platform": "linux",
           "extra": ""}
    names = []
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is None or req.marker.evaluate(env):
            names.append(req.name.lower())
    return names


def nvidia_gpu() -> bool:
    """Whether this machine has an NVIDIA GPU (a desktop driver or a Jetson's Tegra)."""
    from pathlib import Path

    return any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/nvhost-ctrl",
                                          "/etc/nv_tegra_release"))


def installed(dist: str) -> str | None:
    """The installed version of a distribution, without importing it (importing may crash)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def selftest(name: str, timeout: float) -> dict:
    """Run `python -m edgekit.selftest NAME` in a child process.

    Returns:
        {"result": the child's JSON or None, "returncode", "stage": where it stopped,
         "why": one line when there is no result}.
    """
    cmd = [sys.executable, "-m", "edgekit.selftest", name]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"result": None, "returncode": None, "stage": None,
                "why": f"{name} self-test did not finish in {timeout:.0f} s"}
    except OSError as e:
        return {"result": None, "returncode": None, "stage": None,
                "why": f"could not start {sys.executable}: {e.strerror or e}"}
    stages = [line.split(":", 1)[1].strip() for line in proc.stderr.splitlines()
              if line.startswith("stage:")]
    out = {"result": None, "returncode": proc.returncode, "stage": stages[-1] if stages else None}
    if proc.returncode == 0:
        try:
            out["result"] = json.loads(proc.stdout.strip().splitlines()[-1])
            return out
        except (json.JSONDecodeError, IndexError):
            out["why"] = f"{name} self-test printed no result"
            return out
    sig = signal_of(proc.returncode)
    if sig:
        out["why"] = f"{name} crashed with {sig} ({describe_signal(sig)})"
    else:
        last = (proc.stderr.strip().splitlines() or ["no error output"])[-1]
        out["why"] = f"{name} self-test failed (exit {proc.returncode}): {last[:200]}"
    return out


def signal_of(returncode: int | None) -> str | None:
    """The signal that killed a child: -N from subprocess, or 128+N through a shell."""
    if returncode is None or returncode == 0:
        return None
    number = -returncode if returncode < 0 else returncode - 128 if 128 < returncode < 160 \
        else None
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


def describe_signal(name: str) -> str:
    return {"SIGILL": "Illegal instruction", "SIGSEGV": "Segmentation fault",
            "SIGBUS": "Bus error", "SIGKILL": "killed: out of memory?",
            "SIGABRT": "Aborted"}.get(name, name)


def crash_line(dist: str, version: str, run: dict, facts: dict) -> str:
    """One line a user can act on: what crashed, where, on which CPU, and what works there."""
    sig = signal_of(run["returncode"])
    where = {"import": f"`import {dist}`", "ops": "its first conv"}.get(run["stage"],
                                                                     "its self-test")
    cpu = facts["cpu"]
    if sig is None:
        return f"{dist} {version}: {run['why']} (on {cpu})."
    if sig != "SIGILL":
        return f"{dist} {version} {run['why']} at {where} on this {cpu}."
    line = (f"{dist} {version} dies with \"Illegal instruction\" (SIGILL) at {where} on this "
            f"{cpu}: the wheel was built for instructions this CPU lacks")
    if dist != "torch":
        return line + f"; reinstall {dist} from PyPI for {facts['arch']} or try an older release."
    known = torch_on(facts)
    if known:
        works = " or ".join(known["works"])
        line += (f"; versions known to work on {known['core']}: {works} "
                 f"(pip install 'torch=={known['works'][0]}' --index-url {TORCH_CPU_INDEX}), "
                 "or build one with pi/build_pytorch.sh")
    else:
        line += f"; install a torch release built for this CPU (CPU-only: {TORCH_CPU_INDEX})"
    return line + "; the .onnx artifacts need no torch."


def torch_on(facts: dict) -> dict | None:
    """What is known about aarch64 torch wheels on this core (or one with the same ISA)."""
    if facts["arch"] not in ("aarch64", "arm64"):
        return None
    core = facts["cpu"] if facts["cpu"] in TORCH_ON_ARM else \
        "Cortex-A76" if facts["isa"].get("dotprod") else "Cortex-A72"
    return {"core": core, **TORCH_ON_ARM[core]}


def format_report(report: dict) -> str:
    """The human-readable report: one line per check, then the diagnosis lines."""
    lines = [f"[{c['status']:>4}] {c['name']:<12} {c['detail']}" for c in report["checks"]]
    lines += [f"diagnosis: {d}" for d in report["diagnosis"]]
    lines.append("edgekit doctor: " + ("this machine runs edgekit" if report["ok"] else
                                       "problems found (see above)"))
    return "\n".join(lines)
