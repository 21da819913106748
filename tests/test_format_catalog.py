"""The format catalog: one entry (plus its exporter and backend) is all a new format needs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit import formats
from edgekit.errors import EdgekitError

PLUGINS = Path(__file__).parent / "plugins"


def test_the_catalog_lists_every_builtin_format_in_export_order():
    names = [f.name for f in formats.formats()]
    assert names[:5] == ["onnx", "onnx-int8", "onnx-fp16", "torchscript", "torchscript-int8"]
    for f in formats.formats():  # each after what it is made from
        assert all(names.index(n) < names.index(f.name) for n in f.needs)
    assert formats.backends()[".onnx"].backend.endswith(":OnnxRunner")
    assert formats.by_file("model.int8.ts").name == "torchscript-int8"



def protocol_members(protocol) -> set[str]:
    return {n for n in vars(protocol) if not n.startswith("_")} | set(
        vars(protocol).get("__annotations__", {}))


def test_every_exporter_and_search_satisfies_its_protocol():
    """The interfaces export and the int8 search rely on are typing.Protocols that every
    implementation the catalog names has, member for member."""
    import dataclasses
    import importlib

    from edgekit.exporting.formats import Exporter
    from edgekit.exporting.int8.mixed import Variants

    for f in formats.formats():
        assert isinstance(importlib.import_module(f.exporter), Exporter), f.exporter
    searches = {f.search for f in formats.formats() if f.search}
    assert searches == {"edgekit.exporting.int8.mixed_onnx", "edgekit.exporting.int8.mixed_torch"}
    for module in searches:
        impl = importlib.import_module(module).Variants
        have = set(dir(impl)) | {f.name for f in dataclasses.fields(impl)}
        assert protocol_members(Variants) - have == set(), module
    assert protocol_members(Variants) >= {"fmt", "done", "layout", "methods", "get", "sqnr"}
    assert all(f.chart for f in formats.formats() if f.search)


def test_flags_select_formats_and_refuse_a_precision_without_its_family():
    assert formats.select(["onnx"], ["int8"]) == ["onnx", "onnx-int8"]
    assert formats.select(["onnx", "torchscript"], ["int8", "fp16"]) == [
        "onnx", "onnx-int8", "onnx-fp16", "torchscript", "torchscript-int8"]
    with pytest.raises(EdgekitError, match=r"--fp16 converts the ONNX model: add --onnx"):
        formats.select(["torchscript"], ["fp16"])


def test_registration_fails_loudly():
    with pytest.raises(ValueError, match="needs 'nope'"):
        formats.register(formats.Format("x", "model.x", "x", "X", "fp32", "m", "m:R",
                                        needs=("nope",)))
    with pytest.raises(ValueError, match=r"\.onnx files already run on"):
        formats.register(formats.Format("y", "other.onnx", "y", "Y", "fp32", "m", "m:R"))
    with pytest.raises(ValueError, match="already registered"):
        formats.register(formats.get("onnx"))


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """The real CLI, in a process that imported the test-only format first."""
    code = "import sys, gzonnx; from edgekit.cli import main; sys.argv[0] = 'edgekit'; main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(PLUGINS)})


@pytest.mark.slow
def test_a_format_added_in_one_place_goes_all_the_way(tiny_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    done = cli("export", run, "--onnx", "--gzonnx", "--max-int8-drop", "5")
    assert done.returncode == 0, done.stderr
    assert "--gzonnx" in cli("export", "--help").stdout

    export = run / "export"
    report = json.loads((export / "report.json").read_text())
    rows = {r["file"]: r for r in report["artifacts"]}
    assert rows["model.gzonnx"]["passed"] and rows["model.gzonnx"]["format"] == "gzonnx"
    assert rows["model.gzonnx"]["max_abs_diff"] < 1e-4  # the same graph as model.onnx
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["artifacts"]["model.gzonnx"]["check"] == "passed"
    assert len(manifest["artifacts"]["model.gzonnx"]["sha256"]) == 64

    monkeypatch.syspath_prepend(str(PLUGINS))
    import gzonnx

    from edgekit.runtime import load

    try:
        runner = load(export / "model.gzonnx")
        assert runner.backend == "gzonnx" and runner.manifest["artifact"]["format"] == "gzonnx"
        with np.load(export / "samples.npz") as z:
            x = z["x"][:4]
        np.testing.assert_allclose(runner.run(x), load(export / "model.onnx").run(x), atol=1e-5)
    finally:
        formats.unregister(gzonnx.FORMAT.name)

    predicted = [json.loads(cli("predict", export / name, run / "sample.png", "--json").stdout)
                 for name in ("model.gzonnx", "model.onnx")]
    assert predicted[0]["label"] == predicted[1]["label"]
    assert cli("verify", export).returncode == 0
    bench = cli("bench", export / "model.gzonnx", "--runs", "5", "--warmup", "1", "--json")
    assert bench.returncode == 0, bench.stderr
    result = json.loads(bench.stdout)["results"][0]
    assert result["file"] == "model.gzonnx" and result["backend"] == "gzonnx"

    (export / "model.gzonnx").write_bytes(b"\x1f\x8b" + b"0" * 64)  # a damaged copy
    refused = cli("predict", export / "model.gzonnx", run / "sample.png")
    assert refused.returncode == 1 and "does not match the sha256" in refused.stderr
