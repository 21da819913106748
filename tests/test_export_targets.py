"""Targets as data: the documented presets, and `local` read from recorded CPU flags."""

from pathlib import Path

import pytest

from edgekit import machine
from edgekit.errors import EdgekitError
from edgekit.exporting.formats.torchscript_int8 import engine_for
from edgekit.exporting.int8 import targets
from edgekit.exporting.int8.scheme import Scheme

CPUINFO = Path(__file__).parent / "data" / "cpuinfo"


def facts(arch: str, isa: dict, emulated: bool = False) -> dict:
    return {"arch": arch, "cpu": "test CPU", "isa": isa, "emulated": emulated}


@pytest.mark.parametrize("name", ["pi4", "pi5", "arm64"])
def test_arm_presets_are_qnnpack_and_s8s8_qdq(name):
    t = targets.resolve(name)
    assert engine_for(t) == "qnnpack" and t.arch == "aarch64" and not t.tune
    assert [x.name for x in t.static] == ["qdq-s8s8-pc"]  # symmetric per-channel int8 weights
    assert not t.static[0].reduce_range
    assert [x.name for x in t.dynamic] == ["dyn-u8s8"]
    assert "MLAS" in t.source and "quantization" in t.source


def test_x86_preset_is_u8s8_with_reduce_range():
    t = targets.resolve("x86")
    assert engine_for(t) == "x86" and not t.tune
    assert [x.name for x in t.static] == ["qdq-u8s8-pc-rr"]
    assert t.static[0].activations == "uint8" and t.static[0].reduce_range
    assert "reduce_range" in t.source


def test_local_on_a_recorded_zen4_with_vnni():
    text = (CPUINFO / "x86_64-amd-epyc-zen4.txt").read_text()
    t = targets.local_target(facts("x86_64", machine.isa_features(text, "x86_64")))
    assert t.tune and engine_for(t) == "x86"
    names = [x.name for x in t.static]
    # U8S8 first (fast on every measured x86), the others timed against it; no 7-bit weights
    # with VNNI; never S8S8 QOperator (slow on x86-64 per onnxruntime's guide).
    assert names == ["qdq-u8s8-pc", "qdq-s8s8-pc", "qop-u8s8-pc", "qdq-u8s8"]
    assert "qop-s8s8-pc" not in names
    assert "VNNI" in t.description and t.isa["avx512_vnni"]


def test_local_x86_without_vnni_reduces_the_range_of_u8s8():
    t = targets.local_target(facts("x86_64", {"avx2": True, "fma": True, "vnni": False}))
    byname = {x.name: x for x in t.static}
    assert byname["qdq-u8s8-pc-rr"].reduce_range and byname["qop-u8s8-pc-rr"].reduce_range
    assert not byname["qdq-s8s8-pc"].reduce_range
    assert "no VNNI" in t.description


def test_local_x86_with_avx_vnni_int8_tries_s8s8_first():
    t = targets.local_target(facts("x86_64", {"avx2": True, "vnni": True,
                                              "avx_vnni_int8": True}))
    assert t.static[0].name == "qdq-s8s8-pc"


@pytest.mark.parametrize("dotprod", [True, False])
def test_local_arm_uses_qnnpack_and_times_both_signednesses(dotprod):
    t = targets.local_target(facts("aarch64", {"neon": True, "dotprod": dotprod}))
    assert engine_for(t) == "qnnpack" and t.tune
    assert [x.name for x in t.static] == ["qdq-s8s8-pc", "qdq-u8s8-pc"]
    assert ("no dot product" in t.description) != dotprod


def test_emulated_arm_is_not_timed():
    t = targets.local_target(facts("aarch64", {"neon": True}, emulated=True))
    assert not t.tune and engine_for(t) == "qnnpack"
    assert "emulation" in t.description


def test_this_machine_resolves():
    t = targets.resolve("local")
    assert t.name == "local" and t.static and engine_for(t) in ("x86", "qnnpack")


def test_unknown_target_names_the_choices():
    with pytest.raises(EdgekitError, match=r"unknown target 'pi3'; expected one of: local, x86, "
                                           r"pi4, pi5, arm64"):
        targets.resolve("pi3")


def test_scheme_names_say_what_they_are():
    assert Scheme(form="qoperator", activations="uint8", per_channel=False,
                  reduce_range=True).name == "qop-u8s8-rr"
    assert Scheme(mode="dynamic", weights="uint8").name == "dyn-u8u8-pc"
    assert Scheme().to_dict()["name"] == "qdq-s8s8-pc"


def test_the_documented_layout_stays_unless_another_is_faster_beyond_the_noise(tmp_path):
    """export's choice goes through bench's one rule (edgekit.benchmark.stats.pick)."""
    from types import SimpleNamespace

    from edgekit import formats
    from edgekit.exporting.choose import Candidate, choose

    def cand(name, ms, low, high):
        check = SimpleNamespace(passed=True, latency_ms=ms, timing={"ci95_ms": [low, high]})
        return Candidate(formats.get("onnx-int8"), tmp_path / name, {"name": name}, check)

    documented, faster = cand("a.onnx", 2.0, 1.9, 2.1), cand("b.onnx", 1.0, 0.9, 1.1)
    assert choose([documented, faster]) is faster
    within = cand("c.onnx", 1.95, 1.8, 2.0)
    assert choose([documented, within]) is documented
    assert choose([documented, within, cand("d.onnx", 5.0, 4.9, 5.1)]) is documented
