"""Where an exported model will run, as data: the int8 schemes to try there.

A target lists, for int8 export, the quantization schemes (edgekit.exporting.int8.scheme.Scheme, no
backend's
vocabulary) to try: `static` for conv nets (calibrated), `dynamic` for Linear/RNN/LSTM/GRU
models. The first of each tuple is the documented default. Presets (`x86`, `pi4`, `pi5`,
`arm64`) name one scheme each, with the source it comes from: a machine other than this one
cannot be timed from here. `local` is this machine, built from its ISA flags (edgekit.machine):
it lists every scheme that can be fast here, and export times each and keeps the fastest that
passes. Each int8 format translates a scheme into its library's options.

Why schemes differ (MEASURED_X86 below): on x86 the int8 GEMM multiplies uint8 activations by
int8 weights (VPMADDUBSW / VPDPBUSD), so signed activations can fall back to a slow path
(resnet18 S8S8 ran slower than fp32 on x86 CPUs with VNNI); without VNNI that instruction can
saturate, which `reduce_range` (7-bit weights) avoids. On ARM S8S8 with symmetric per-channel
weights runs MLAS's SDOT and symmetric conv kernels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from edgekit.errors import EdgekitError
from edgekit.exporting.int8.scheme import Scheme

ORT_GUIDE = ("onnxruntime quantization guide, 'Data type selection' and FAQ 'When to use "
             "reduce-range' (onnxruntime.ai/docs/performance/model-optimizations/"
             "quantization.html), and onnxruntime 1.32 quantize_static docstring, 'Choosing "
             "parameters for CPU inference'")
MLAS_ARM = ("onnxruntime MLAS ARM64 dispatch (onnxruntime/core/mlas/lib/platform.cpp, convsym.cpp, "
            "qlinearconv.cc): S8S8 with symmetric per-channel weights uses the int8 NEON/SDOT "
            "kernels")
MEASURED_X86 = ("edgekit's benchmarks/int8_speed.py, benchmarks/results/2026-11-25-amd-epyc/"
                "int8_speed.json: resnet18 QDQ S8S8 22.1 ms against fp32 17.9 ms and U8S8 6.0 ms "
                "on an AMD EPYC with AVX512-VNNI (batch 1, 2 threads)")
EXECUTORCH_ARM = ("ExecuTorch: XNNPACK is its CPU backend for ARM, int8 from PT2E with the "
                  "XNNPACKQuantizer (symmetric per-channel weights); Arm's "
                  "resnet-18-int8-xnnpack-executorch model card: Raspberry Pi 5 p50 8.75 ms")
TORCH_ENGINES = ("PyTorch quantization docs, 'Backend/Hardware Support': qnnpack for ARM, x86 "
                 "(fbgemm + oneDNN) for x86 servers")


@dataclass(frozen=True)
class Target:
    """A machine to export for: a preset, or this machine (`local`)."""

    name: str
    description: str
    arch: str  # "x86_64" or "aarch64"
    static: tuple[Scheme, ...]  # the documented default first
    dynamic: tuple[Scheme, ...]
    tune: bool  # time the candidates here and keep the fastest (only for this machine)
    source: str  # where the choice comes from
    isa: dict = field(default_factory=dict)  # the flags a local target was read from

    def schemes(self, mode: str) -> tuple[Scheme, ...]:
        return self.static if mode == "static" else self.dynamic

    def to_dict(self) -> dict:
        from edgekit.exporting.formats.torchscript_int8 import engine_for

        return {"name": self.name, "description": self.description, "arch": self.arch,
                "quantized_engine": engine_for(self), "tuned": self.tune, "source": self.source,
                "static_layouts": [x.name for x in self.static],
                "dynamic_layouts": [x.name for x in self.dynamic], "isa": self.isa}


S8S8 = Scheme()
U8S8 = Scheme(activations="uint8")
QOP_U8S8 = Scheme(form="qoperator", activations="uint8")
DYN_S8 = Scheme(mode="dynamic", activations="uint8", per_channel=False)
DYN_U8 = Scheme(mode="dynamic", activations="uint8", weights="uint8", symmetric=False,
                per_channel=False)

_ARM = dict(arch="aarch64", static=(S8S8,), dynamic=(DYN_S8,), tune=False,
            source=f"{ORT_GUIDE}: S8S8 QDQ is the first choice and ARM has no saturation issue; "
                   f"{MLAS_ARM}; {TORCH_ENGINES}; {EXECUTORCH_ARM}")

PRESETS: dict[str, Target] = {
    "x86": Target(
        "x86", "any x86-64 CPU with AVX2 (VNNI or not)", arch="x86_64",
        static=(replace(U8S8, reduce_range=True),),
        dynamic=(replace(DYN_S8, reduce_range=True),), tune=False,
        source=f"{ORT_GUIDE}: U8S8 uses VPMADDUBSW/VPDPBUSD, reduce_range avoids saturation on "
               f"CPUs without VNNI; {MEASURED_X86}; {TORCH_ENGINES}"),
    "pi4": Target("pi4", "Raspberry Pi 4 (Cortex-A72, NEON, no dot product)", **_ARM),
    "pi5": Target("pi5", "Raspberry Pi 5 (Cortex-A76, NEON + SDOT/UDOT dot product)", **_ARM),
    "arm64": Target("arm64", "any ARMv8-A 64-bit CPU (NEON)", **_ARM),
}
TARGETS = ("local", *PRESETS)


def resolve(name: str, machine: dict | None = None) -> Target:
    """The Target called `name`; `local` is read from `machine` (default: this machine).

    Raises:
        EdgekitError: an unknown target name.
    """
    if name in PRESETS:
        return PRESETS[name]
    if name != "local":
        raise EdgekitError(f"unknown target {name!r}; expected one of: {', '.join(TARGETS)}")
    if machine is None:
        from edgekit.machine import machine_info

        machine = machine_info()
    return local_target(machine)


def local_target(machine: dict) -> Target:
    """This machine as a Target: the layouts worth timing here, from its ISA flags.

    Args:
        machine: edgekit.machine.machine_info() (arch, cpu, isa, emulated).
    """
    arch, isa, cpu = machine["arch"], machine.get("isa") or {}, machine.get("cpu", "?")
    flags = {k: v for k, v in isa.items() if v}
    if machine.get("emulated"):  # timings under qemu say nothing about the real CPU
        preset = PRESETS["arm64" if arch in ("aarch64", "arm64") else "x86"]
        return replace(preset, name="local", isa=flags,
                       description=f"{arch} {cpu} under emulation: the {preset.name} preset, "
                                   "not timed (emulated timings are not the CPU's)")
    if arch in ("aarch64", "arm64"):
        dot = "dotprod" if isa.get("dotprod") else "no dot product"
        return Target("local", f"this machine: {arch} {cpu} ({dot})", arch="aarch64",
                      static=(S8S8, U8S8), dynamic=(DYN_S8,), tune=True,
                      source=f"this machine's ISA flags, then timed; default from {MLAS_ARM}",
                      isa=flags)
    if arch in ("x86_64", "AMD64", "amd64"):
        vnni, vnni8 = bool(isa.get("vnni")), bool(isa.get("avx_vnni_int8"))
        rr = not vnni  # the ORT guide: reduce_range for U8S8 only where VNNI is missing
        u8s8, qop = replace(U8S8, reduce_range=rr), replace(QOP_U8S8, reduce_range=rr)
        # AVX-VNNI-INT8 multiplies signed by signed: there S8S8 is the natural first choice.
        # Per-tensor weights: the fastest on CPU per onnxruntime, kept only if accurate enough.
        tensor = replace(u8s8, per_channel=False)
        static = (S8S8, u8s8, qop, tensor) if vnni8 else (u8s8, S8S8, qop, tensor)
        dynamic = (replace(DYN_S8, reduce_range=rr), DYN_U8)
        what = "AVX-VNNI-INT8" if vnni8 else "VNNI" if vnni else \
            "AVX-512, no VNNI" if isa.get("avx512") else "AVX2, no VNNI" if isa.get("avx2") \
            else "no AVX2"
        return Target("local", f"this machine: {arch} {cpu} ({what})", arch="x86_64",
                      static=static, dynamic=dynamic, tune=True,
                      source=f"this machine's ISA flags, then timed; {ORT_GUIDE}", isa=flags)
    return Target("local", f"this machine: {arch} {cpu}", arch=arch,
                  static=(S8S8,), dynamic=(DYN_S8,), tune=True,
                  source=f"{ORT_GUIDE} (S8S8 QDQ is the default)", isa=flags)
