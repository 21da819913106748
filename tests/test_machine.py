"""Machine facts parsed from recorded /proc/cpuinfo text (no dependence on this machine)."""

from pathlib import Path

import pytest

from edgekit import machine

CPUINFO = Path(__file__).parent / "data" / "cpuinfo"


def test_x86_host_features_from_a_recorded_cpuinfo():
    text = (CPUINFO / "x86_64-amd-epyc-zen4.txt").read_text()
    isa = machine.isa_features(text, "x86_64")
    assert isa["avx2"] and isa["avx512"] and isa["vnni"] and isa["avx512_vnni"]
    assert not isa["avx_vnni_int8"] and not isa["amx"]
    assert machine.cpu_name(text, "x86_64") == "AMD EPYC"
    assert not machine.is_emulated("x86_64", text, "x86_64")
    # family 25 model 17: a Zen 4 (Genoa), whatever the file was first named after
    assert machine.cpu_id(text, "x86_64") == {"vendor": "AuthenticAMD", "family": 25,
                                              "model": 17, "stepping": 1, "microarch": "Zen 4"}


@pytest.mark.parametrize("family,model,microarch", [
    (25, 1, "Zen 3"), (25, 0x21, "Zen 3"), (25, 0x11, "Zen 4"), (25, 0x61, "Zen 4"),
    (26, 2, "Zen 5"), (23, 0x31, "Zen 2"), (24, 0, None)])
def test_amd_microarchitecture_from_family_and_model(family, model, microarch):
    text = (f"vendor_id\t: AuthenticAMD\ncpu family\t: {family}\nmodel\t\t: {model}\n"
            "model name\t: AMD EPYC\n")
    assert machine.cpu_id(text, "x86_64")["microarch"] == microarch
    intel = text.replace("AuthenticAMD", "GenuineIntel")
    assert machine.cpu_id(intel, "x86_64")["microarch"] is None  # no table for Intel
    assert machine.cpu_id("", "x86_64") == dict.fromkeys(
        ("vendor", "family", "model", "stepping", "microarch"))


def test_emulation_is_seen_through_the_kernel_arch():
    assert machine.is_emulated("aarch64", "", "x86_64")
    assert not machine.is_emulated("aarch64", "", "aarch64")


def test_throttle_word_decodes_each_bit():
    assert machine.throttle_state("0x0") == {"throttled": "0x0", "throttle_flags": []}
    state = machine.throttle_state("0x50005")
    assert state["throttle_flags"] == ["under-voltage", "throttled", "under-voltage occurred",
                                       "throttling occurred"]
    assert machine.throttle_state("junk")["throttled"] is None


def test_this_machine_reports_every_fact():
    facts = machine.machine_info()
    keys = {"arch", "cpu", "cpu_id", "cores", "usable_cores", "isa", "board", "pi", "governor",
            "os", "hostname", "emulated", "versions"}
    assert keys <= set(facts)
    assert facts["cores"] >= facts["usable_cores"] >= 1 and isinstance(facts["isa"], dict)


# Real /proc/cpuinfo of a Pi 4 and a Pi 5 on 64-bit kernels (sources: data/cpuinfo/SOURCES.md).
PIS = [
    ("aarch64-raspberry-pi-4.txt", "Cortex-A72", "Raspberry Pi 4 Model B Rev 1.1",
     {"neon": True, "dotprod": False, "i8mm": False, "fp16": False, "sve": False}),
    ("aarch64-raspberry-pi-5.txt", "Cortex-A76", "Raspberry Pi 5 Model B Rev 1.0",
     {"neon": True, "dotprod": True, "i8mm": False, "fp16": True, "sve": False}),
]


@pytest.mark.parametrize(("sample", "core", "board", "expected"), PIS,
                         ids=["pi4", "pi5"])
def test_raspberry_pi_features_from_recorded_cpuinfo(sample, core, board, expected):
    text = (CPUINFO / sample).read_text()
    isa = machine.isa_features(text, "aarch64")
    assert {k: isa[k] for k in expected} == expected
    assert not any(isa[k] for k in ("bf16", "sve2"))
    assert machine.cpu_name(text, "aarch64") == core  # no "model name" on a 64-bit Pi kernel
    assert machine.board_model(text) == board  # from the trailing "Model" line
    assert machine.board_model(text, "Raspberry Pi 5 Model B Rev 1.1\x00") == \
        "Raspberry Pi 5 Model B Rev 1.1"  # the device tree wins when there is one
    assert not machine.is_emulated("aarch64", text, "aarch64")
    assert machine.is_emulated("aarch64", text, "x86_64")  # qemu-user on an x86 host


def test_x86_features_are_not_read_as_arm_ones():
    text = (CPUINFO / "x86_64-amd-epyc-zen4.txt").read_text()
    assert machine.board_model(text) is None
    # An aarch64 Python under an old qemu-user sees the host's cpuinfo: say so, claim nothing.
    assert machine.cpu_name(text, "aarch64").startswith("unknown ARM core (cpuinfo is the host")
    assert not any(machine.isa_features(text, "aarch64").values())
    assert machine.is_emulated("aarch64", text, "")


def test_emulated_pi_cores_from_recorded_qemu_cpuinfo():
    """qemu-user 10 fills /proc/cpuinfo for the guest core; "CPU part" names it, not the
    generic "model name" it also writes."""
    a72 = (CPUINFO / "aarch64-qemu-cortex-a72.txt").read_text()
    a76 = (CPUINFO / "aarch64-qemu-cortex-a76.txt").read_text()
    assert machine.cpu_name(a72, "aarch64") == "Cortex-A72"
    assert machine.cpu_name(a76, "aarch64") == "Cortex-A76"
    isa72, isa76 = machine.isa_features(a72, "aarch64"), machine.isa_features(a76, "aarch64")
    assert isa72["neon"] and not isa72["dotprod"] and not isa72["fp16"]
    assert isa76["neon"] and isa76["dotprod"] and isa76["fp16"] and not isa76["i8mm"]
    assert machine.is_emulated("aarch64", a72, "x86_64")


def test_arm_cpu_id_names_the_core_part():
    pi5 = (CPUINFO / "aarch64-raspberry-pi-5.txt").read_text()
    ident = machine.cpu_id(pi5, "aarch64")
    assert ident["implementer"] == "0x41" and ident["part"] == "0xd0b"  # Arm, Cortex-A76
    assert set(ident) == {"implementer", "part", "variant", "revision"}


def test_cpu_label_and_same_cpu_tell_apart_two_cpus_of_one_name():
    zen4 = (CPUINFO / "x86_64-amd-epyc-zen4.txt").read_text()
    zen3 = zen4.replace("model\t\t: 17", "model\t\t: 1")
    a = {"arch": "x86_64", "cpu": "AMD EPYC", "cpu_id": machine.cpu_id(zen4, "x86_64")}
    b = {**a, "cpu_id": machine.cpu_id(zen3, "x86_64")}
    assert machine.cpu_label(a) == "AMD EPYC (Zen 4, family 25 model 17)"
    assert machine.cpu_label(b) == "AMD EPYC (Zen 3, family 25 model 1)"
    assert machine.same_cpu(a, a) and not machine.same_cpu(a, b)
    old = {"arch": "x86_64", "cpu": "AMD EPYC"}  # recorded before cpu_id: by name only
    assert machine.same_cpu(a, old) and machine.cpu_label(old) == "AMD EPYC"
    assert not machine.same_cpu(a, {**old, "cpu": "Cortex-A76"})
    assert machine.cpu_label({**a, "arch": "aarch64", "cpu": "Cortex-A72"}) == "Cortex-A72"
