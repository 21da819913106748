"""ExecuTorch `.pte`: exported, checked by the int8 gate, self-describing, run by every command."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import edgekit
from test_no_torch import cli_blocked

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pte_run(tiny_run, tmp_path_factory):
    """tiny_run (ONNX, TorchScript) with model.pte and model.int8.pte added by a re-export."""
    run = tmp_path_factory.mktemp("pte") / "run"
    shutil.copytree(tiny_run, run)
    edgekit("export", run, "--pte", "--int8", "--max-int8-drop", "5", "--tune-seconds", "0")
    return run


def test_pte_is_exported_checked_and_listed(pte_run):
    export = pte_run / "export"
    report = json.loads((export / "report.json").read_text())
    rows = {r["file"]: r for r in report["artifacts"]}
    assert rows["model.pte"]["passed"] and rows["model.int8.pte"]["passed"]
    assert rows["model.pte"]["max_abs_diff"] < 1e-4  # fp32 parity with PyTorch
    assert rows["model.int8.pte"]["layout"] == "pt2e-xnnpack-static-pc"
    assert rows["model.int8.pte"]["bytes"] < 0.4 * rows["model.pte"]["bytes"]
    # XNNPACK takes the convolutions and linear layers; what it leaves is said, by name.
    assert isinstance(rows["model.pte"]["undelegated"], dict)
    assert not {"convolution", "linear", "addmm"} & set(rows["model.pte"]["undelegated"])
    assert "deprecated upstream" in rows["model.int8.ts"]["deprecated"]
    md = (export / "report.md").read_text()
    assert "model.pte: XNNPACK runs every operator" in md
    manifest = json.loads((export / "manifest.json").read_text())
    for name in ("model.pte", "model.int8.pte"):
        assert len(manifest["artifacts"][name]["sha256"]) == 64
        assert manifest["artifacts"][name]["check"] == "passed"
    # the re-export kept the ONNX and TorchScript artifacts and checked them again
    assert {"model.onnx", "model.int8.onnx", "model.ts", "model.int8.ts"} <= set(rows)


def test_pte_predicts_the_label_onnx_int8_predicts(pte_run):
    export = pte_run / "export"
    labels = [json.loads(edgekit("predict", export / f, pte_run / "sample.png", "--json")
                         .stdout)["label"] for f in ("model.int8.pte", "model.int8.onnx")]
    assert labels[0] == labels[1]


def test_a_pte_copied_alone_carries_its_manifest(pte_run, tmp_path):
    from edgekit.runtime import load

    alone = tmp_path / "model.int8.pte"
    shutil.copy(pte_run / "export" / "model.int8.pte", alone)
    runner = load(alone)
    listed = json.loads((pte_run / "export" / "manifest.json").read_text())
    assert runner.manifest["labels"] == listed["labels"]
    assert runner.manifest["preprocess"] == listed["preprocess"]
    assert runner.manifest["artifact"]["file"] == "model.int8.pte"
    top = runner.classify_image(pte_run / "sample.png", k=1)
    assert top[0][0] in listed["labels"]
    with np.load(pte_run / "export" / "samples.npz") as z:
        x = z["x"]
    many = np.resize(x, (70, *x.shape[1:]))  # beyond the program's planned batch: split
    np.testing.assert_allclose(runner.run(many)[:len(x)], runner.run(x), atol=1e-5)


def test_the_int8_gate_holds_for_pte(pte_run):
    from edgekit import formats
    from edgekit.exporting.check import Gate, Heldout, check_artifact
    from edgekit.runtime import load
    from edgekit.tasks import get_task

    export = pte_run / "export"
    with np.load(export / "samples.npz") as z:
        x, y = z["x"], z["y"]
    task = get_task("classification")
    reference = load(export / "model.onnx").run(x)
    held = Heldout(x, y, reference, task.score(reference, y), task, 64)
    fmt = formats.get("pte-int8")
    assert check_artifact(export / "model.int8.pte", fmt, held, Gate(1e-4, 1e-2, 100)).passed
    failed = check_artifact(export / "model.int8.pte", fmt, held, Gate(1e-4, 1e-2, -1))
    assert not failed.passed and "loses" in failed.why and "(allowed -1" in failed.why


def test_a_flipped_byte_is_refused(pte_run, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(pte_run / "export", export)
    data = bytearray((export / "model.int8.pte").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (export / "model.int8.pte").write_bytes(bytes(data))
    proc = edgekit("verify", export, check=False)
    assert proc.returncode == 1 and "model.int8.pte (mismatch)" in proc.stderr
    proc = edgekit("predict", export / "model.int8.pte", pte_run / "sample.png", check=False)
    assert proc.returncode == 1 and "does not match the sha256" in proc.stderr


def test_bench_and_summary_run_pte(pte_run, tmp_path):
    proc = edgekit("bench", pte_run / "export" / "model.int8.pte", "--runs", "5", "--warmup",
                   "1", "--json", "--out", tmp_path / "bench.json")
    result = json.loads(proc.stdout)["results"][0]
    assert result["backend"] == "executorch" and result["precision"] == "int8"
    assert "model.int8.pte" in edgekit("summary", pte_run).stdout


def test_pte_without_torch_says_what_to_install(pte_run):
    proc = cli_blocked("predict", pte_run / "export" / "model.pte", pte_run / "sample.png")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: model.pte: `.pte` needs torch and executorch on this machine: pip install "
        "'edgekit[pte]'; the .onnx artifacts need neither")


def test_an_int8_pte_this_cpu_would_fault_on_is_refused_before_its_first_call(pte_run,
                                                                               monkeypatch):
    """Where executorch's XNNPACK would misread the CPU's features (issue 26; under emulation in
    test_arm), load/predict/serve/bench refuse the int8 program in one line and tune skips it;
    EDGEKIT_PTE_FIX_CPUINFO=1 runs it instead."""
    from edgekit.errors import EdgekitError
    from edgekit.runtime import cpuinfo_layout, load
    from edgekit.tuning import wont_run_here

    line = "int8 .pte would die with SIGILL here: (the diagnosis)"
    monkeypatch.setattr(cpuinfo_layout, "diagnosis", lambda words=None: line)
    monkeypatch.delenv(cpuinfo_layout.FIX_ENV, raising=False)
    export = pte_run / "export"
    with pytest.raises(EdgekitError) as e:
        load(export / "model.int8.pte")
    assert str(e.value) == f"model.int8.pte: {line}"
    assert wont_run_here(export / "model.int8.pte", {"precision": "int8"}) == line
    assert wont_run_here(export / "model.pte", {"precision": "fp32"}) == ""
    assert wont_run_here(export / "model.int8.onnx", {"precision": "int8"}) == ""
    load(export / "model.pte")  # fp32 is not refused
    monkeypatch.setenv(cpuinfo_layout.FIX_ENV, "1")  # a no-op on x86: no known pair here
    assert load(export / "model.int8.pte").run(np.zeros((1, 1, 32, 32), np.float32)).shape[0] == 1
