"""What this machine is: the facts that decide int8 speed, read once, used by export and bench.

`export --target local` reads the ISA features to choose int8 layouts; `bench` and `doctor`
record them beside every figure, so a number always says which CPU it came from. This module
imports neither torch nor onnxruntime (it reports their versions only if already imported).

    facts = machine_info()
    facts["isa"]          # {"avx2": True, "avx512": True, "vnni": True, ...} or NEON/dotprod/...
    facts["emulated"]     # True for an aarch64 Python under qemu-user: not real ARM timings
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ARM_ARCHES = ("aarch64", "arm64", "armv7l", "armv8l")

# /proc/cpuinfo "Features" (ARM) and "flags" (x86) words -> the names edgekit reports.
ARM_FEATURES = {"neon": ("asimd", "neon"), "dotprod": ("asimddp",), "i8mm": ("i8mm",),
                "fp16": ("asimdhp",), "bf16": ("bf16",), "sve": ("sve",), "sve2": ("sve2",)}
X86_FEATURES = {"avx2": ("avx2",), "fma": ("fma",), "avx512": ("avx512f",),
                "vnni": ("avx512_vnni", "avx_vnni"), "avx512_vnni": ("avx512_vnni",),
                "avx_vnni": ("avx_vnni",), "avx_vnni_int8": ("avx_vnni_int8",),
                "avx512_bf16": ("avx512_bf16",), "amx": ("amx_int8",)}

# ARM's "CPU implementer" 0x41, "CPU part" -> core name (Arm's technical reference manuals).
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55",
             "0xd07": "Cortex-A57", "0xd08": "Cortex-A72", "0xd09": "Cortex-A73",
             "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76", "0xd0c": "Neoverse-N1",
             "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
             "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710",
             "0xd49": "Neoverse-N2", "0xd4f": "Neoverse-V2", "0xd80": "Cortex-A520",
             "0xd81": "Cortex-A720"}

# Bits of the firmware's get_throttled word (Raspberry Pi documentation, "vcgencmd").
THROTTLE_BITS = {0: "under-voltage", 1: "arm frequency capped", 2: "throttled",
                 3: "soft temperature limit", 16: "under-voltage occurred",
                 17: "arm frequency capping occurred", 18: "throttling occurred",
                 19: "soft temperature limit occurred"}


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first value of each key in /proc/cpuinfo text (keys as written, e.g. "model name")."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def isa_features(cpuinfo: str, arch: str) -> dict[str, bool]:
    """The ISA features that decide int8 speed, from /proc/cpuinfo text of an `arch` machine.

    ARM: neon, dotprod (SDOT/UDOT), i8mm, fp16, bf16, sve, sve2.
    x86: avx2, fma, avx512, vnni (AVX-512 VNNI or AVX-VNNI), avx_vnni_int8, avx512_bf16, amx.
    """
    fields = parse_cpuinfo(cpuinfo)
    arm = _is_arm(arch)
    words = set(fields.get("Features" if arm else "flags", "").split())
    table = ARM_FEATURES if arm else X86_FEATURES
    features = {name: any(w in words for w in flags) for name, flags in table.items()}
    if arm and arch in ("aarch64", "arm64") and fields.get("Features") is not None:
        features["neon"] = True  # Advanced SIMD is mandatory in ARMv8-A
    return features


def cpu_name(cpuinfo: str, arch: str) -> str:
    """A readable CPU name: x86 "model name"; on ARM the core from "CPU part" (Cortex-A72).

    On ARM the core is preferred to "model name", which a 32-bit Pi OS fills with the
    uninformative "ARMv7 Processor rev 3 (v7l)" and a 64-bit one leaves out.
    """
    fields = parse_cpuinfo(cpuinfo)
    if _is_arm(arch):
        if fields.get("CPU implementer") == "0x41" and fields.get("CPU part") in ARM_PARTS:
            return ARM_PARTS[fields["CPU part"]]
        if fields.get("CPU part"):
            return (f"ARM implementer {fields.get('CPU implementer', '?')} "
                    f"part {fields['CPU part']}")
        if "vendor_id" in fields:  # older qemu-user passes the host's x86 cpuinfo through
            return f"unknown ARM core (cpuinfo is the host's: {fields.get('model name', '?')})"
    if fields.get("model name"):
        return fields["model name"]
    return platform.processor() or fields.get("Hardware") or "unknown"


# AMD's x86 families and model ranges -> microarchitecture (AMD's revision guides): "AMD EPYC"
# alone names a Zen 3, a Zen 4 and a Zen 5 alike, and their fastest int8 layouts differ.
AMD_MICROARCH = {23: [(range(0x00, 0x30), "Zen"), (range(0x30, 0x100), "Zen 2")],
                 25: [(range(0x10, 0x20), "Zen 4"), (range(0x60, 0x80), "Zen 4"),
                      (range(0xA0, 0xB0), "Zen 4"), (range(0x00, 0x100), "Zen 3")],
                 26: [(range(0x00, 0x100), "Zen 5")]}


def cpu_id(cpuinfo: str, arch: str) -> dict:
    """Which CPU exactly: x86 {"vendor", "family", "model", "stepping", "microarch"} (the
    microarchitecture for AMD's known families, else None); ARM {"implementer", "part",
    "variant", "revision"}. Values a /proc/cpuinfo does not give are None."""
    fields = parse_cpuinfo(cpuinfo)
    if _is_arm(arch):
        return {key: fields.get(name) for key, name in (
            ("implementer", "CPU implementer"), ("part", "CPU part"), ("variant", "CPU variant"),
            ("revision", "CPU revision"))}

    def number(name: str) -> int | None:
        value = fields.get(name, "")
        return int(value) if value.isdigit() else None

    family, model = number("cpu family"), number("model")
    microarch = None
    if fields.get("vendor_id") == "AuthenticAMD" and model is not None:
        microarch = next((name for models, name in AMD_MICROARCH.get(family, [])
                          if model in models), None)
    return {"vendor": fields.get("vendor_id"), "family": family, "model": model,
            "stepping": number("stepping"), "microarch": microarch}


def cpu_label(facts: dict) -> str:
    """machine_info()'s CPU with what tells apart CPUs of one name:
    "AMD EPYC (Zen 4, family 25 model 17)", "Cortex-A76"."""
    ident = facts.get("cpu_id") or {}
    if ident.get("family") is None or _is_arm(facts.get("arch", "")):
        return facts["cpu"]
    microarch = f"{ident['microarch']}, " if ident.get("microarch") else ""
    return f"{facts['cpu']} ({microarch}family {ident['family']} model {ident['model']})"


def same_cpu(a: dict, b: dict) -> bool:
    """Whether machine facts `a` and `b` (machine_info()) name one kind of CPU; facts recorded
    before cpu_id existed compare by arch and name only."""
    def kind(facts: dict) -> tuple:
        ident = facts.get("cpu_id") or {}
        return tuple(ident.get(k) for k in ("vendor", "family", "model", "implementer", "part"))

    if (a.get("arch"), a.get("cpu")) != (b.get("arch"), b.get("cpu")):
        return False
    return not (a.get("cpu_id") and b.get("cpu_id")) or kind(a) == kind(b)


def board_model(cpuinfo: str, device_tree_model: str = "") -> str | None:
    """The board ("Raspberry Pi 5 Model B Rev 1.0"): the device tree's model, else cpuinfo's.

    Raspberry Pi kernels print the board as the last "Model" line of /proc/cpuinfo; the
    device tree (/proc/device-tree/model, NUL-terminated) has it on any device-tree board.
    """
    return (device_tree_model.strip("\x00\n ") or parse_cpuinfo(cpuinfo).get("Model")
            or None)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where not exposed): a busy machine's
    timings say so."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), which containers may limit."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def check_threads(threads: int | None, source: str = "--threads") -> None:
    """Refuse more threads than the cores this process may use: the extra ones only queue
    for the same cores (999 of them took the load average above 300 and gave no result).

    Raises:
        EdgekitError: `threads` above usable_cores(), naming `source` and the bound.
    """
    from edgekit.errors import EdgekitError

    cores = usable_cores()
    if threads is not None and threads > cores:
        raise EdgekitError(f"{source} {threads}: this machine has {cores} usable core(s); "
                           f"expected 1 to {cores}")


def memory_bytes() -> int | None:
    """This machine's memory (MemTotal), None where /proc/meminfo does not say."""
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def cpu_governor() -> str | None:
    """The cpufreq governor of core 0 ("ondemand", "performance"), None where not exposed.

    On a Pi, "ondemand" ramps the clock up only after a burst of load: short benchmarks
    then time part of their calls at the idle clock.
    """
    return _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").strip() or None


def is_emulated(arch: str, cpuinfo: str, kernel_arch: str) -> bool:
    """True when this Python runs under qemu-user: the guest's uname differs from the kernel's.

    qemu-user reports the guest machine through uname but cannot hide the host kernel's own
    architecture (/proc/sys/kernel/arch); older qemu also passes the host's x86 cpuinfo through.
    """
    if kernel_arch and kernel_arch != arch:
        return True
    return _is_arm(arch) and "vendor_id" in parse_cpuinfo(cpuinfo)


def pi_state() -> dict | None:
    """SoC temperature and throttling on a Raspberry Pi (vcgencmd if present, else sysfs)."""
    board = _read("/proc/device-tree/model").strip("\x00\n ")
    if "Raspberry Pi" not in board:
        return None
    state: dict = {"temperature_c": None, "throttled": None, "throttle_flags": []}
    temp = _read("/sys/class/thermal/thermal_zone0/temp").strip()
    if temp.isdigit():
        state["temperature_c"] = int(temp) / 1000
    word = None
    if shutil.which("vcgencmd"):
        try:
            out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True,
                                 timeout=5).stdout  # "throttled=0x50000"
            word = out.strip().partition("=")[2] or None
        except (OSError, subprocess.SubprocessError):
            word = None
    if word is None:
        word = _read("/sys/devices/platform/soc/soc:firmware/get_throttled").strip() or None
    if word is not None:
        state.update(throttle_state(word))
    return state


def throttle_state(word: str) -> dict:
    """Decode the firmware's get_throttled word ("0x50005" or "327685")."""
    try:
        value = int(word, 16) if word.lower().startswith("0x") else int(word)
    except ValueError:
        return {"throttled": None, "throttle_flags": []}
    flags = [name for bit, name in THROTTLE_BITS.items() if value >> bit & 1]
    return {"throttled": hex(value), "throttle_flags": flags}


def versions() -> dict:
    """Python and numpy, plus onnxruntime/torch and torch's quantized engine if imported."""
    import numpy as np

    out = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("onnxruntime", "torch"):
        if name in sys.modules:  # report what this run used, without importing anything new
            out[name] = sys.modules[name].__version__
    if "torch" in sys.modules:
        out["quantized_engine"] = sys.modules["torch"].backends.quantized.engine
    return out


def machine_info() -> dict:
    """This machine: arch, CPU, cores, ISA features, board, Pi state, emulation, versions.

    Returns:
        arch, cpu, cpu_id (family, model, microarch: see cpu_id), cores (all), usable_cores
        (this process's affinity), isa ({feature: bool}),
        board (None off device-tree boards), pi (temperature/throttling, None off a Pi),
        governor, os, hostname, emulated (qemu-user: times are not real ARM times), versions.
    """
    cpuinfo = _read("/proc/cpuinfo")
    arch = platform.machine()
    return {
        "arch": arch,
        "cpu": cpu_name(cpuinfo, arch),
        "cpu_id": cpu_id(cpuinfo, arch),  # family/model: which "AMD EPYC" a figure came from
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "isa": isa_features(cpuinfo, arch),
        "board": board_model(cpuinfo, _read("/proc/device-tree/model")),  # Raspberry Pi 4 ..
        "pi": pi_state(),
        "governor": cpu_governor(),
        "os": f"{platform.system()} {platform.release()}",
        "hostname": platform.node(),
        "emulated": is_emulated(arch, cpuinfo, _read("/proc/sys/kernel/arch").strip()),
        "versions": versions(),
    }


def _is_arm(arch: str) -> bool:
    return arch in ARM_ARCHES


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""
