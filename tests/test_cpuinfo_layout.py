"""edgekit.runtime.cpuinfo_layout: which CPUs ExecuTorch 1.0.1 + torch 2.9.1 would fault on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgekit.runtime import cpuinfo_layout as cl


# /proc/cpuinfo Features of a real Pi 4, and what qemu's cores advertise.
def words(text: str) -> set[str]:
    return set(text.split())


PI4 = words("fp asimd evtstrm crc32 cpuid")
QEMU_A72 = words("fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid")
QEMU_A76 = words("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                 "asimdrdm lrcpc dcpop asimddp")


def test_the_known_pair_reads_four_bytes_off():
    assert cl.layout_shift("1.0.1", "2.9.1") == 4
    assert cl.layout_shift("1.1.0", "2.10.0") == 0  # the pair whose layouts agree
    assert cl.layout_shift("1.5.1", "2.9.1") is None  # not judged: no claim, no correction
    assert cl.layout_shift("1.0.1", "2.14.0") is None


@pytest.mark.parametrize("features, wrong", [
    (QEMU_A72, [("dot", "aes")]),  # SDOT on a core without it: the SIGILL
    (PI4, []),                     # no AES: `dot` reads false, as it should
    (QEMU_A76, []),                # has dot; rdm/fp16arith read false: slower, not wrong
    (set(), []),
])
def test_misread_kernel_flags(features, wrong):
    assert cl.misread(features, 4) == wrong
    assert cl.misread(features, 0) == []


def test_the_diagnosis_names_the_pair_the_flags_and_the_fix(monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    monkeypatch.setattr(cl, "installed", {"executorch": "1.0.1", "torch": "2.9.1"}.get)
    monkeypatch.setattr(cl, "torch_cpuinfo_copies", lambda: [Path("libtorch_cpu.so")])
    line = cl.diagnosis(QEMU_A72)
    assert line.startswith("int8 .pte would die with SIGILL here: executorch 1.0.1's XNNPACK "
                           "reads this CPU's features from torch 2.9.1's cpuinfo")
    assert "its `dot` from torch's `aes`" in line and "lacks asimddp" in line
    assert cl.FIX_ENV in line and "\n" not in line
    assert cl.diagnosis(PI4) is None and cl.diagnosis(QEMU_A76) is None
    # executorch carrying its own cpuinfo (no undefined cpuinfo_isa): nothing to say
    monkeypatch.setattr(cl, "torch_cpuinfo_copies", lambda: [])
    assert cl.diagnosis(QEMU_A72) is None


def test_no_diagnosis_off_arm():
    if sys.platform == "linux" and cl.installed("executorch") and __import__(
            "platform").machine() == "x86_64":
        assert cl.diagnosis() is None


def test_dynamic_symbols_reads_an_elf_file():
    import ctypes.util

    libc = ctypes.util.find_library("c")
    path = next((p for p in (Path("/lib/x86_64-linux-gnu") / (libc or ""),
                             Path("/lib/aarch64-linux-gnu") / (libc or ""))
                 if p.is_file()), None)
    if path is None:
        pytest.skip("no libc file to read")
    assert cl.dynamic_symbol(path, "malloc")[0] is True
    assert cl.dynamic_symbol(path, "no_such_symbol_here") is None
    assert cl.dynamic_symbol(Path(__file__), "malloc") is None  # not ELF


def test_the_fix_is_opt_in(monkeypatch):
    monkeypatch.delenv(cl.FIX_ENV, raising=False)
    assert not cl.fix_requested()
    monkeypatch.setenv(cl.FIX_ENV, "1")
    assert cl.fix_requested()
