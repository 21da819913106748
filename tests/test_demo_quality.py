"""The demo's promise on the real recipe: lenet5 >= 97% on digits, int8 within 1 point."""

import json

import pytest

from edgekit.exporting import export
from edgekit.recipe import load_recipe
from edgekit.training import train

pytestmark = pytest.mark.slow


def test_lenet5_digits_accuracy_survives_int8(tmp_path):
    run = train(load_recipe("lenet5"), tmp_path / "run", progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.97
    report = export(run, ["onnx", "onnx-int8", "torchscript"])
    rows = {r["file"]: r for r in report["artifacts"]}
    assert report["pytorch"]["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert rows["model.onnx"]["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert rows["model.ts"]["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert rows["model.int8.onnx"]["accuracy_drop_points"] <= 1.0
    assert rows["model.int8.onnx"]["top1_agreement"] >= 0.98
