"""A real int8 failure, shown honestly: plain int8 fails export's gate, the automatic path passes.

No bundled recipe on the offline data fails ONNX int8 (lenet5, mnist_convnet, mobilenet_v2 with
AdamW, spiral MLPs all stayed within 0.6 points), so the failing model is built: LeNet-5 with an
activation outlier, one pixel of conv1's channel 0 raised by 1000 before the ReLU in every input,
the way a few activations of trained networks grow far larger than the rest (the "massive
activations" of transformers, LLM.int8()'s outlier features). Every int8 format here (onnxruntime,
torch.ao, XNNPACK) quantizes activations per tensor, so that one value sets the range of the
tensor and every other value keeps a level or two; the spike is in every input, so no
calibration method clips it. edgekit trains it on the offline digits; `export()` runs, for each
int8 format, once with `int8_fallback=False` (the gate fails), once with the default fallback
(calibration search, then layers kept fp32: ONNX nodes, torch modules).
"""

import re

import pytest

from edgekit.errors import EdgekitError

torch = pytest.importorskip("torch")


class Spike(torch.nn.Module):
    """Adds `offset` to one pixel of channel 0: (B, 6, 28, 28) -> (B, 6, 28, 28)."""

    def __init__(self, offset: float):
        super().__init__()
        shift = torch.zeros(1, 6, 28, 28)
        shift[:, 0, 0, 0] = offset
        self.register_buffer("shift", shift)

    def forward(self, x):
        return x + self.shift


class OutlierLeNet(torch.nn.Module):
    def __init__(self, num_classes: int = 10, offset: float = 1000.0):
        from edgekit.models.lenet import LeNet5

        super().__init__()
        self.lenet = LeNet5(num_classes)
        # A module of its own, as a trained net's layers are: the torch formats keep modules
        # fp32 by name, and an op of the model's own forward has none.
        self.spike = Spike(offset)

    def forward(self, x):  # (B, 1, 32, 32) -> (B, num_classes)
        f = self.lenet.features
        x = f[2](f[1](self.spike(f[0](x))))  # conv1, outlier channel, ReLU, pool
        x = f[5](f[4](f[3](x)))
        return self.lenet.classifier(x)


@pytest.fixture(scope="module")
def outlier_run(tmp_path_factory):
    from edgekit.models import MODELS
    from edgekit.recipe import load_recipe
    from edgekit.training import train

    def build(input_shape, num_outputs, dropout=0.0):
        return OutlierLeNet(num_outputs)

    MODELS._entries["test-outlier-lenet"] = build  # for this module only
    try:
        run = train(load_recipe("lenet5", ["model.name=test-outlier-lenet", "train.epochs=8",
                                           "train.threads=1"]),
                    tmp_path_factory.mktemp("outlier") / "run", progress=False)
        yield run
    finally:
        del MODELS._entries["test-outlier-lenet"]


FAMILY = {"onnx-int8": "onnx", "torchscript-int8": "torchscript", "pte-int8": "pte"}


def int8_format(name: str):
    from edgekit import formats as catalog

    fmt = catalog.get(name)
    if fmt.missing():
        pytest.skip(f"{name} needs {', '.join(fmt.missing())}")
    return fmt


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILY))
def test_plain_int8_fails_the_gate(outlier_run, name):
    from edgekit.exporting import export
    fmt = int8_format(name)
    loses = r"model\.int8\.\S+ loses \d+\.\d+ accuracy points"  # a candidate's name
    if fmt.best_effort:  # a best-effort format that fails is left out and said why
        report = export(outlier_run, [FAMILY[name], name], target="x86", int8_fallback=False)
        assert fmt.file not in {r["file"] for r in report["artifacts"]}
        drops = [re.search(r"loses (\d+\.\d+)", n) for n in report["notes"]
                 if re.search(loses, n)]
        assert drops and float(drops[0].group(1)) > 1.0
        assert name not in (report["int8_accuracy"] or {})  # nothing published to rank
        return
    with pytest.raises(EdgekitError, match=loses):
        export(outlier_run, [FAMILY[name], name], target="x86", int8_fallback=False)
    report = export(outlier_run, [FAMILY[name], name], target="x86", int8_fallback=False,
                    allow_degraded=True)
    row = {r["file"]: r for r in report["artifacts"]}[fmt.file]
    assert not row["passed"] and row["accuracy_drop_points"] > 1.0
    assert report["int8_accuracy"][name]["fallback"] is None  # asked not to search
    assert report["int8_accuracy"][name]["layers"][0]["rank"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILY))
def test_fallback_passes_with_layers_kept_fp32(outlier_run, name):
    from edgekit.exporting import export
    fmt = int8_format(name)
    report = export(outlier_run, [FAMILY[name], name], target="x86")
    row = {r["file"]: r for r in report["artifacts"]}[fmt.file]
    fix = report["int8_accuracy"][name]["fallback"]
    assert row["passed"] and row["accuracy_drop_points"] <= report["thresholds"][
        "max_int8_drop"]
    assert fix["full_int8"]["drop_points"] > 1.0
    tried = [t["method"] for t in fix["calibration"]]
    assert tried == {"onnx-int8": ["minmax", "entropy", "percentile"],
                     "torchscript-int8": ["MinMaxObserver", "HistogramObserver"],
                     "pte-int8": ["HistogramObserver",
                                  "HistogramObserver, per-tensor weights"]}[name]
    assert fix["kept_method"] in tried
    # The spike is in every input, so no calibration method clips it: layers go back to fp32,
    # the conv that reads the spike among them, and far fewer than all of them.
    assert not any(t["passed"] for t in fix["calibration"])
    kept = [k["module"] or k["node"] for k in fix["fp32_layers"]]
    assert "lenet.features.3" in kept and 0 < len(kept) <= 3 < len(fix["layers"])
    assert row["accuracy_drop_points"] == fix["drop_points"]
    assert fix["full_int8"]["bytes"] < fix["bytes"] < fix["fp32_bytes"]
    assert row["layout"] == f"{fix['layout']}+fp32x{len(kept)}"
    export_dir = outlier_run / "export"
    chart = fmt.chart
    assert report["int8_accuracy"][name]["chart"] == chart
    assert (export_dir / chart).read_bytes()[:4] == b"\x89PNG"
    text = (export_dir / "report.md").read_text()
    assert "## int8 accuracy, layer by layer" in text and f"### {fmt.file}" in text
    assert f"kept **{fix['kept_method']}**" in text
    assert report["int8_accuracy"][name]["layout"] == row["layout"]


@pytest.mark.parametrize("flags, fallback", [((), True), (("--no-int8-fallback",), False)])
def test_cli_no_int8_fallback_turns_the_search_off(tmp_path, monkeypatch, flags, fallback):
    from click.testing import CliRunner

    import edgekit.exporting
    from edgekit.cli import main

    seen = {}

    def fake_export(run, formats, **kwargs):
        seen.update(kwargs)
        raise EdgekitError("stop here")

    monkeypatch.setattr(edgekit.exporting, "export", fake_export)
    result = CliRunner().invoke(main, ["export", str(tmp_path), "--onnx", "--int8", *flags])
    assert result.exit_code == 1 and "stop here" in result.output
    assert seen["int8_fallback"] is fallback
