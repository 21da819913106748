"""Quantization-aware training: a recipe's `qat` section fine-tunes a finished run with int8
simulated (edgekit.qat), resumable like any training, and its export takes the learned ranges."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from edgekit.errors import EdgekitError

torch = pytest.importorskip("torch")
pytest.importorskip("executorch")  # the XNNPACK quantizer QAT prepares with

BASE = ["lenet5", "train.epochs=4", "train.threads=1", "data.batch_size=32"]
QAT = ["qat.epochs=2", "train.threads=1", "data.batch_size=32"]


def _train(args: list[str], out):
    from edgekit.recipe import load_recipe
    from edgekit.training import train

    return train(load_recipe(args[0], args[1:]), out, progress=False)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    return _train(BASE, tmp_path_factory.mktemp("base") / "run")


@pytest.fixture(scope="module")
def qat_run(base_run, tmp_path_factory):
    return _train(["lenet5", *QAT, f"qat.base={base_run}"], tmp_path_factory.mktemp("qat") / "run")


def test_qat_run_records_its_base_and_simulated_int8_metric(base_run, qat_run):
    metrics = json.loads((qat_run / "metrics.json").read_text())
    base = json.loads((base_run / "metrics.json").read_text())
    assert metrics["qat"]["base"] == str(base_run)
    assert metrics["qat"]["base_test_accuracy"] == base["test_accuracy"]
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["qat"]["lr"] == pytest.approx(0.001)  # qat.lr 0: train.lr (0.002) / 2
    assert yaml.safe_load((qat_run / "recipe.yaml").read_text())["qat"]["base"] == str(base_run)
    assert metrics["test_accuracy"] > 0.5  # fine-tuned, not broken (the base is ~0.9)


def test_export_of_a_qat_run_uses_the_learned_ranges(qat_run):
    import onnx
    from onnx import numpy_helper

    from edgekit import qat
    from edgekit.exporting import export
    from edgekit.training import load_run

    report = export(qat_run, ["onnx", "onnx-int8", "pte-int8"], target="x86",
                    int8_fallback=False, tune_seconds=0)
    rows = {a["file"]: a for a in report["artifacts"]}
    assert all(a["passed"] for a in rows.values()), rows
    assert rows["model.int8.onnx"]["layout"].startswith("qat-")
    assert rows["model.int8.pte"]["layout"] == "pt2e-xnnpack-qat-pc"
    # Each int8 candidate carries whether its ranges were learned (Candidate.learned).
    assert {r["file"]: r["ranges"] for r in report["qat"]["int8"]} == {
        "model.int8.onnx": "learned", "model.int8.pte": "learned"}
    for fmt in ("onnx-int8", "pte-int8"):  # ranked by SQNR; nothing re-calibrated
        table = report["int8_accuracy"][fmt]
        assert table["top_k"] == 0 and table["fallback"] is None, table
        assert {"features.0", "features.3", "classifier.7"} <= {r["node"] for r in
                                                                table["layers"]}
        assert all(r["sqnr_db"] is not None and "drop_if_fp32" not in r
                   for r in table["layers"])
    text = (qat_run / "export" / "report.md").read_text()
    assert "No drop if fp32: the layers were trained with their int8 error" in text
    # The first QuantizeLinear (of the input) carries the scale training learned.
    _, model, _ = load_run(qat_run)
    prepared = qat.load(qat_run, model, torch.zeros(2, 1, 32, 32))
    from safetensors.torch import load_file

    saved, now = load_file(qat_run / "model.safetensors"), prepared.state_dict()
    assert all(torch.equal(now[k], v) for k, v in saved.items())  # eps too (torchao resets it)
    first = next(n for n in prepared.graph.nodes  # the fake quantizer of the input
                 if n.op == "call_module" and n.args[0].op == "placeholder")
    learned = float(getattr(prepared, first.target).scale)
    proto = onnx.load(str(qat_run / "export" / "model.int8.onnx"))
    consts = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    quant = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear"
                 and n.input[0] == "input")
    assert float(consts[quant.input[1]]) == pytest.approx(learned, rel=1e-6)


def test_uint8_activations_give_exactly_the_int8_results(qat_run, tmp_path):
    import copy

    import onnx
    import onnxruntime as ort

    from edgekit import qat
    from edgekit.exporting.formats.onnx import export_onnx
    from edgekit.exporting.int8.qat import activations_to_uint8, quantize_biases
    from edgekit.training import load_run

    _, model, _ = load_run(qat_run)
    example = torch.zeros(2, 1, 32, 32)
    export_onnx(qat.convert(qat.load(qat_run, model, example)), example, tmp_path / "q.onnx",
                18, {})
    s8 = onnx.load(str(tmp_path / "q.onnx"))
    quantize_biases(s8)
    u8 = copy.deepcopy(s8)
    activations_to_uint8(u8)
    kinds = {n.input[2] for n in u8.graph.node if n.op_type == "QuantizeLinear"}
    assert kinds and all(k.endswith("_uint8") for k in kinds)
    x = np.random.default_rng(0).normal(size=(16, 1, 32, 32)).astype(np.float32)
    outs = [ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"])
            .run(None, {"input": x})[0] for p in (s8, u8)]
    assert np.array_equal(*outs)


def test_train_and_eval_switch_dropout_and_batchnorm_only():
    from edgekit import qat

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Dropout(0.3),
                              torch.nn.Linear(4 * 6 * 6, 3))
    prepared = qat.prepare(net, torch.randn(2, 1, 8, 8))
    aten = torch.ops.aten

    def flags():
        nodes = list(prepared.graph.nodes)
        return ([(n.args[1], n.args[2]) for n in nodes if n.target == aten.dropout.default],
                [n.args[5] for n in nodes if n.target == aten.batch_norm.default])

    assert flags() == ([(0.3, True)], [True])  # p kept (torchao's rewrite would set 0.5)
    prepared.eval()
    assert flags() == ([(0.3, False)], [False])
    cfg = type("Q", (), {"epochs": 3, "freeze_bn": 1, "freeze_ranges": 2})()
    prepared.train()
    prepared(torch.randn(4, 1, 8, 8))  # the observers set their ranges
    qat.freeze(prepared, 2, cfg)  # past freeze_bn, before freeze_ranges
    assert flags() == ([(0.3, True)], [False])
    observers = [m for m in prepared.modules() if hasattr(m, "disable_observer")]
    assert observers and all(int(m.observer_enabled) == 1 for m in observers)
    prepared.eval()
    prepared.train()  # a frozen BatchNorm stays frozen across train/eval
    assert flags()[1] == [False]
    qat.freeze(prepared, 3, cfg)
    assert all(int(m.observer_enabled) == 0 for m in observers)
    before = [m.scale.clone() for m in observers]
    prepared(torch.randn(4, 1, 8, 8) * 100)  # ranges frozen: a wild batch moves nothing
    assert all(torch.equal(a, m.scale) for a, m in zip(before, observers, strict=True))


def test_default_schedule():
    from edgekit import qat
    from edgekit.recipe import QatConfig

    assert (qat.bn_epochs(QatConfig(epochs=3)), qat.range_epochs(QatConfig(epochs=3))) == (2, 2)
    assert qat.bn_epochs(QatConfig(epochs=1)) == 1  # one epoch: nothing freezes
    assert qat.range_epochs(QatConfig(epochs=4, freeze_bn=1, freeze_ranges=3)) == 3


@pytest.mark.parametrize("override, message", [
    ("qat.epochs=-1", "qat.epochs: expected a value >= 0"),
    ("qat.freeze_bn=-2", "qat.freeze_bn: expected -1 <= value"),
    ("qat.lr=-0.1", "qat.lr: expected a value >= 0"),
])
def test_bad_qat_settings(override, message):
    from edgekit.recipe import load_recipe

    with pytest.raises(EdgekitError, match=message):
        load_recipe("lenet5", [override])


def test_bad_bases(base_run, qat_run, tmp_path, monkeypatch):
    with pytest.raises(EdgekitError, match="is not a finished run directory"):
        _train(["lenet5", *QAT, f"qat.base={tmp_path / 'nope'}"], tmp_path / "a")
    with pytest.raises(EdgekitError, match="is itself a QAT run"):
        _train(["lenet5", *QAT, f"qat.base={qat_run}"], tmp_path / "b")
    with pytest.raises(EdgekitError, match="trained another model"):
        _train(["lenet5", *QAT, f"qat.base={base_run}", "model.dropout=0.5"], tmp_path / "c")
    with pytest.raises(EdgekitError, match="trained on other data"):
        _train(["lenet5", *QAT, f"qat.base={base_run}", "data.image_size=28"], tmp_path / "d")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EdgekitError, match="no finished lenet5 run under 'runs' to fine-tune"):
        _train(["lenet5", *QAT], tmp_path / "e")
    assert not any((tmp_path / d).exists() for d in "abcde")  # nothing half-made


def test_latest_base_is_this_recipes_newest_plain_run(base_run, qat_run, tmp_path, monkeypatch):
    import shutil

    from edgekit import qat
    from edgekit.recipe import load_recipe

    (tmp_path / "runs").mkdir()
    shutil.copytree(base_run, tmp_path / "runs" / "lenet5-1")
    time.sleep(0.05)
    shutil.copytree(qat_run, tmp_path / "runs" / "lenet5-qat-2")  # newer, but a QAT run
    monkeypatch.chdir(tmp_path)
    assert qat.resolve_base(load_recipe("lenet5", ["qat.epochs=1"])).name == "lenet5-1"


def test_dynamic_int8_models_have_no_ranges_to_learn(tmp_path):
    base = _train(["spiral-mlp", "train.epochs=1"], tmp_path / "base")
    with pytest.raises(EdgekitError, match="quantized dynamically"):
        _train(["spiral-mlp", "qat.epochs=1", f"qat.base={base}"], tmp_path / "q")


@pytest.mark.slow
def test_sigterm_then_resume_reaches_the_unbroken_qat_run(base_run, tmp_path):
    from safetensors.torch import load_file

    args = ["lenet5", "--set", "qat.epochs=3", "--set", f"qat.base={base_run}",
            "--set", "data.batch_size=16", "--set", "train.threads=1", "--no-progress"]

    def cli(*more):
        return subprocess.Popen([sys.executable, "-m", "edgekit", "train", *map(str, more)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    ref = tmp_path / "ref"
    assert cli(*args, "--out", ref).wait(600) == 0
    run = tmp_path / "run"
    proc = cli(*args, "--out", run)
    deadline = time.monotonic() + 300
    while not (run / "checkpoint.pt").exists():  # epoch 1 done: stop it in epoch 2
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143 and f"--resume {run}" in err, err
    assert not (run / "metrics.json").exists()
    resumed = cli("--resume", run)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    a, b = load_file(ref / "model.safetensors"), load_file(run / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha = json.loads((ref / "metrics.json").read_text())["history"]
    hb = json.loads((run / "metrics.json").read_text())["history"]
    assert [h["test_accuracy"] for h in ha] == [h["test_accuracy"] for h in hb]


@pytest.fixture
def outlier_model():
    """tests/test_int8_fallback.py's failing case: LeNet-5 with an activation outlier."""
    from test_int8_fallback import OutlierLeNet

    from edgekit.models import MODELS

    MODELS._entries["test-outlier-lenet"] = lambda input_shape, num_outputs, dropout=0.0: \
        OutlierLeNet(num_outputs)
    yield "model.name=test-outlier-lenet"
    del MODELS._entries["test-outlier-lenet"]


def _x86_without_vnni() -> bool:
    from edgekit.machine import machine_info

    m = machine_info()
    return m["arch"] == "x86_64" and not (m.get("isa") or {}).get("vnni")


@pytest.mark.slow
@pytest.mark.xfail(_x86_without_vnni(), strict=False,
                   reason="known defect (found 2026-12-03 on an AMD EPYC Zen 3, AVX2 without "
                          "VNNI): onnxruntime's int8 QDQ of the QAT graph loses 3.89 points "
                          "against the fake-quantized model there (both activation layouts), "
                          "where it keeps them on VNNI CPUs; not resolved yet")
def test_qat_brings_the_failing_case_within_the_gate(outlier_model, tmp_path):
    from edgekit.exporting import export
    base = _train(["lenet5", outlier_model, "train.epochs=8", "train.threads=1"],
                  tmp_path / "base")
    ptq = export(base, ["onnx", "onnx-int8"], target="x86", int8_fallback=False,
                 allow_degraded=True, tune_seconds=0)
    fp32 = {r["file"]: r for r in ptq["artifacts"]}["model.onnx"]["accuracy"]
    assert {r["file"]: r for r in ptq["artifacts"]}["model.int8.onnx"][
        "accuracy_drop_points"] > 1.0  # plain int8 fails
    run = _train(["lenet5", outlier_model, "qat.epochs=5", f"qat.base={base}",
                  "train.threads=1"], tmp_path / "qat")
    report = export(run, ["onnx", "onnx-int8", "pte-int8"], target="x86",
                    int8_fallback=False, tune_seconds=0)
    entry = report["qat"]
    assert entry["base_accuracy"] == pytest.approx(fp32) and entry["ranges"].startswith("learned")
    assert {r["file"] for r in entry["int8"]} == {"model.int8.onnx", "model.int8.pte"}
    for r in entry["int8"]:  # within the gate against the fp32 model trained before QAT
        assert r["drop_vs_base_points"] <= report["thresholds"]["max_int8_drop"], r
    text = (run / "export" / "report.md").read_text()
    assert f"Quantization-aware training: 5 epochs from run {base}" in text
