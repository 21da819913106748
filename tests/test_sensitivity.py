"""Per-layer int8 sensitivity and the mixed-precision fallback on a small conv net whose middle
convolution is made harmful: conv1's channel 0 is dead (always 0 after its ReLU) and conv2's
weights reading it are 100x its largest, so the fp32 model is unchanged while per-channel int8
scales every output channel of conv2 to the outlier and rounds its useful weights to zero.

The check the fallback searches with is the agreement of the int8 model's top-1 with the fp32
model's on inputs held out from calibration (the same drop in points export's gate reads): the
inputs the untrained fp32 net separates by a clear margin, as a trained model separates most of
its test set (an untrained net's near-ties flip under any noise).
"""

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.head = torch.nn.Linear(16 * 8 * 8, 10)

    def forward(self, x):  # (B, 3, 8, 8) -> (B, 10)
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.head(x.flatten(1))


def harmful_net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.conv1.bias[0] = -1e3  # channel 0 of conv1: always 0 after the ReLU
        w = net.conv2.weight  # (16, 16, 3, 3)
        w[:, 0] = 100 * w.abs().max()  # outliers that read only that dead channel
    return net


@pytest.fixture(scope="module")
def harmful(tmp_path_factory):
    """(folder, fp32 model after quant_pre_process, full int8 QDQ model, calibration, test)."""
    from onnxruntime.quantization import quant_pre_process

    from edgekit.exporting.formats.onnx import export_onnx
    from edgekit.exporting.formats.onnx_int8 import quantize_onnx
    from edgekit.exporting.int8.targets import S8S8

    folder = tmp_path_factory.mktemp("harmful")
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((64, 3, 8, 8)).astype(np.float32)
    pool = rng.standard_normal((1200, 3, 8, 8)).astype(np.float32)
    net = harmful_net()
    export_onnx(net, torch.from_numpy(calibration[:2]), folder / "model.onnx", 18, {})
    with torch.no_grad():
        top2 = torch.topk(net(torch.from_numpy(pool)), 2).values.numpy()  # (N, 2)
    test = pool[np.argsort(top2[:, 0] - top2[:, 1])[-400:]]  # the clearest 400
    prepped = folder / "model.pre.onnx"
    quant_pre_process(str(folder / "model.onnx"), str(prepped), skip_symbolic_shape=True)
    int8 = folder / "model.int8.onnx"
    manifest = {"artifact": {"file": "model.int8.onnx", "format": "onnx", "precision": "int8"}}
    quantize_onnx(prepped, int8, S8S8, calibration, "minmax", [], manifest)
    return SimpleNamespace(folder=folder, prepped=prepped, int8=int8, calibration=calibration,
                           test=test)


def agreement_check(fp32, x, max_drop=1.0):
    """path -> a verify-like row: points of top-1 lost against the fp32 model on `x`."""
    import onnxruntime as ort

    def top1(path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"input": x})[0].argmax(1)

    reference = top1(fp32)

    def check(path):
        agree = float((top1(path) == reference).mean())
        drop = round(100 * (1 - agree), 4)
        return {"score": agree, "accuracy_drop_points": drop, "passed": drop <= max_drop}

    return check


def test_harmful_layer_has_the_lowest_sqnr(harmful):
    from edgekit.exporting.int8.sensitivity import layer_sqnr

    layers = layer_sqnr(harmful.prepped, harmful.int8, harmful.calibration)
    assert [a.module for a in layers][0] == "conv2"
    assert {a.module for a in layers} == {"conv1", "conv2", "conv3", "head"}
    worst, rest = layers[0], layers[1:]
    assert worst.op == "Conv" and worst.node  # a node name --int8-exclude resolves to
    # The layer alone is far worse than any other layer alone; later layers inherit its error.
    assert all(worst.sqnr_db < a.sqnr_db - 10 for a in rest)
    downstream = {a.module: a.cumulative_sqnr_db for a in rest}
    assert downstream["conv3"] < min(a.sqnr_db for a in rest)


def test_sqnr_of_an_unharmed_net_is_high_everywhere(tmp_path):
    """The control: the same net without the outlier has no layer near the harmful one's SQNR,
    quantized in the layout export tries first on this CPU (S8S8 on an x86 CPU without VNNI
    saturates: conv1 measured 22 dB there, on an AMD EPYC Zen 3; U8S8 with reduce_range, the
    layout export picks there, does not)."""
    from onnxruntime.quantization import quant_pre_process

    from edgekit.exporting.formats.onnx import export_onnx
    from edgekit.exporting.formats.onnx_int8 import quantize_onnx
    from edgekit.exporting.int8.sensitivity import layer_sqnr
    from edgekit.exporting.int8.targets import resolve

    torch.manual_seed(0)
    x = np.random.default_rng(1).standard_normal((32, 3, 8, 8)).astype(np.float32)
    export_onnx(Net().eval(), torch.from_numpy(x[:2]), tmp_path / "m.onnx", 18, {})
    quant_pre_process(str(tmp_path / "m.onnx"), str(tmp_path / "p.onnx"),
                      skip_symbolic_shape=True)
    layout = resolve("local").schemes("static")[0]
    quantize_onnx(tmp_path / "p.onnx", tmp_path / "q.onnx", layout, x, "minmax", [], {})
    layers = layer_sqnr(tmp_path / "p.onnx", tmp_path / "q.onnx", x)
    assert len(layers) == 4 and min(a.sqnr_db for a in layers) > 25


def test_fallback_keeps_only_the_harmful_layer_fp32(harmful, tmp_path):
    from edgekit import formats as catalog
    from edgekit.exporting.int8 import mixed, mixed_onnx
    from edgekit.exporting.int8.report import markdown
    from edgekit.exporting.int8.targets import S8S8

    check = agreement_check(harmful.folder / "model.onnx", harmful.test)
    stage = tmp_path / "stage"
    (stage / ".candidates").mkdir(parents=True)
    (stage / "model.onnx").write_bytes((harmful.folder / "model.onnx").read_bytes())
    ctx = SimpleNamespace(stage=stage, candidates=stage / ".candidates",
                          calibration=harmful.calibration,
                          target=SimpleNamespace(tune=False),
                          int8=SimpleNamespace(calibration_method="minmax"))
    row = check(harmful.int8)
    assert not row["passed"], "the outlier should make plain int8 fail"
    v = mixed_onnx.make(ctx, harmful.int8, S8S8.to_dict(), check, catalog.get("onnx-int8"))
    made, fixed = mixed.fallback(ctx, v, "minmax", (harmful.int8, row))

    assert [t["method"] for t in fixed["calibration"]] == ["minmax", "entropy", "percentile"]
    assert fixed["layers"][0]["module"] == "conv2"
    assert fixed["layers"][0]["recovered_points"] > 0
    assert [k["module"] for k in fixed["fp32_layers"]] == ["conv2"]
    assert len(made) == 1
    path, info, out = made[0]
    assert out["passed"] and out == check(path)  # the file itself passes, re-checked
    assert info["fp32_nodes"] == [fixed["layers"][0]["node"]]
    assert fixed["full_int8"]["bytes"] < fixed["bytes"] < fixed["fp32_bytes"]
    assert fixed["latency_ms"] is None  # the target is not this machine: nothing timed
    text = "\n".join(markdown({"onnx-int8": {
        "format": "onnx-int8", "layout": "qdq-s8s8-pc", "calibration_method": "minmax",
        "top_k": mixed.TOP_K, "layers": fixed["layers"], "fallback": fixed}}))
    assert "1 layer(s) kept fp32 (conv2)" in text and f"kept **{fixed['kept_method']}**" in text


def test_an_excluded_layer_runs_fp32_under_onnxruntime_optimizations(harmful, tmp_path):
    """onnxruntime's WeightBiasQuantization re-quantizes an excluded Conv that reads a DQ
    output; edgekit feeds it the fp32 tensor, so excluding the harmful layer restores fp32."""
    import onnx
    import onnxruntime as ort

    from edgekit.exporting.formats.onnx_int8 import quantize_onnx
    from edgekit.exporting.int8.targets import S8S8

    node = next(n.name for n in onnx.load(str(harmful.prepped)).graph.node
                if "conv2.weight" in n.input)
    out = quantize_onnx(harmful.prepped, tmp_path / "x.onnx", S8S8, harmful.calibration,
                        "minmax", [node], {})

    def logits(path):  # default session options: every graph optimization on
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"input": harmful.test})[0]

    ref, full, mixed = logits(harmful.prepped), logits(harmful.int8), logits(out)
    err = lambda y: np.linalg.norm(ref - y) / np.linalg.norm(ref)  # noqa: E731
    assert err(mixed) < 0.1 < err(full)


def test_rescue_leaves_a_passing_or_dynamic_export_alone(harmful):
    """No search for a format whose candidate passed, nor for dynamic int8 ONNX (no ranges
    to calibrate, no Q/DQ pairs to measure)."""
    from edgekit import formats as catalog
    from edgekit.exporting.check import Check
    from edgekit.exporting.choose import Candidate
    from edgekit.exporting.int8 import mixed
    from edgekit.exporting.int8.targets import S8S8

    fmt = catalog.get("onnx-int8")
    checker = SimpleNamespace(held=SimpleNamespace(task=SimpleNamespace(metric="accuracy")),
                              of=lambda f: lambda p: pytest.fail("nothing is checked"))

    def cand(passed, how):
        return Candidate(fmt, harmful.int8, how, Check("model.int8.onnx", "onnx", "int8", 1,
                                                        passed, score=0.5, drop_points=5.0))

    assert mixed.rescue(SimpleNamespace(), [cand(True, S8S8.to_dict())], checker, 0) == ([], {})
    dynamic = {**S8S8.to_dict(), "mode": "dynamic"}
    assert mixed.rescue(SimpleNamespace(), [cand(False, dynamic)], checker, 0) == ([], {})


def test_chart_is_a_png(harmful, tmp_path):
    pytest.importorskip("matplotlib")
    from edgekit.exporting.int8.report import chart
    from edgekit.exporting.int8.sensitivity import layer_sqnr

    rows = [{**a.to_dict(), "rank": i} for i, a in
            enumerate(layer_sqnr(harmful.prepped, harmful.int8, harmful.calibration), 1)]
    out = chart(rows, [rows[0]["node"]], tmp_path / "sensitivity.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("needed, order, kept", [
    ({"b", "e"}, list("abcdef"), ("b", "e")),  # the shortest passing prefix, then pruned
    ({"a"}, list("abcdef"), ("a",)),
    ({"f"}, list("abcdef"), ("f",)),
    (set("abcdef"), list("abcdef"), tuple("abcdef")),
    ({"z"}, list("abc"), None),  # nothing passes, even with every layer fp32
])
def test_fewest_layers_kept_fp32(needed, order, kept):
    """The search over which layers to keep fp32, against a model that passes exactly when
    the layers in `needed` are fp32: it finds that set, and says when there is none."""
    from pathlib import Path

    from edgekit.exporting.int8.mixed import fewest_fp32_layers

    class Fake:
        def get(self, method, fp32=()):
            ok = needed <= set(fp32)
            return Path("x.onnx"), {"accuracy_drop_points": 0.0 if ok else 5.0, "passed": ok}

    got, steps = fewest_fp32_layers(Fake(), "minmax", order)
    assert got == kept
    assert len(steps) <= 2 * len(order)  # doubling + bisection + one pruning probe a layer


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(16, 32)
        self.fc2 = torch.nn.Linear(32, 32)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x):  # (B, 16) -> (B, 10)
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def harmful_mlp() -> torch.nn.Module:
    """The Linear twin of harmful_net: fc1's unit 0 is dead, fc2's weights reading it are 100x
    its largest (dynamic int8's weight scales go to the outlier)."""
    torch.manual_seed(0)
    net = MLP().eval()
    with torch.no_grad():
        net.fc1.bias[0] = -1e3
        net.fc2.weight[:, 0] = 100 * net.fc2.weight.abs().max()
    return net


def sqnr_rows(fmt: str, net, x: np.ndarray, method: str, tmp_path) -> list[dict]:
    """Per-layer SQNR rows of `net` in int8 format `fmt`, through the code export runs."""
    from edgekit import formats as catalog
    from edgekit.exporting.int8 import mixed_torch, targets
    from edgekit.exporting.int8.plan import Int8Plan

    if catalog.get(fmt).missing():
        pytest.skip(f"{fmt} needs {catalog.get(fmt).missing()}")
    if fmt == "onnx-int8":  # static QDQ: edgekit.exporting.int8.sensitivity
        from onnxruntime.quantization import quant_pre_process

        from edgekit.exporting.formats.onnx import export_onnx
        from edgekit.exporting.formats.onnx_int8 import quantize_onnx
        from edgekit.exporting.int8.sensitivity import layer_sqnr
        from edgekit.exporting.int8.targets import S8S8

        export_onnx(net, torch.from_numpy(x[:2]), tmp_path / "m.onnx", 18, {})
        quant_pre_process(str(tmp_path / "m.onnx"), str(tmp_path / "p.onnx"),
                          skip_symbolic_shape=True)
        quantize_onnx(tmp_path / "p.onnx", tmp_path / "q.onnx", S8S8, x, "minmax", [], {})
        return [a.to_dict() for a in layer_sqnr(tmp_path / "p.onnx", tmp_path / "q.onnx", x)]
    ctx = SimpleNamespace(model=net, example=torch.from_numpy(x[:2]), calibration=x,
                          target=targets.resolve("x86"), cfg=SimpleNamespace(per_channel=True),
                          int8=Int8Plan(method, "", (), "minmax", len(x)))
    calibrations = mixed_torch.CALIBRATIONS[(fmt, method)]
    v = mixed_torch.Variants(catalog.get(fmt), ctx, {}, None, "", None, calibrations)
    return v.sqnr(next(iter(calibrations)), None)


@pytest.mark.parametrize("fmt", ["onnx-int8", "torchscript-int8", "pte-int8"])
def test_harmful_conv_ranks_first_in_every_static_format(fmt, tmp_path):
    x = np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32)
    rows = sqnr_rows(fmt, harmful_net(), x, "static", tmp_path)
    assert [r["module"] for r in rows][0] == "conv2"
    assert {r["module"] for r in rows} == {"conv1", "conv2", "conv3", "head"}
    worst, rest = rows[0], rows[1:]
    assert all(worst["sqnr_db"] < r["sqnr_db"] - 10 for r in rest)
    # later layers inherit its error in the int8 model, not alone
    downstream = {r["module"]: r["cumulative_sqnr_db"] for r in rest}
    assert downstream["conv3"] < min(r["sqnr_db"] for r in rest)


@pytest.mark.parametrize("fmt", ["torchscript-int8", "pte-int8"])
def test_unharmed_net_has_high_sqnr_everywhere(fmt, tmp_path):
    torch.manual_seed(0)
    x = np.random.default_rng(1).standard_normal((32, 3, 8, 8)).astype(np.float32)
    rows = sqnr_rows(fmt, Net().eval(), x, "static", tmp_path)
    assert len(rows) == 4 and min(r["sqnr_db"] for r in rows) > 25


@pytest.mark.parametrize("fmt", ["torchscript-int8", "pte-int8"])
def test_harmful_linear_ranks_first_in_dynamic_int8(fmt, tmp_path):
    """Dynamic int8 (activation ranges at run time) still has a per-layer table in the torch
    formats: the quantized modules' outputs against fp32."""
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    rows = sqnr_rows(fmt, harmful_mlp(), x, "dynamic", tmp_path)
    assert [r["module"] for r in rows][0] == "fc2"
    assert {r["module"] for r in rows} == {"fc1", "fc2", "head"}
    assert all(rows[0]["sqnr_db"] < r["sqnr_db"] - 10 for r in rows[1:])


def test_pte_int8_keeps_an_excluded_module_fp32():
    """`--int8-exclude` for pte-int8 (executorch's set_module_name(name, None) asserts, so
    the quantizer filters the module's ops out): the module has no int8 op left."""
    pytest.importorskip("executorch")
    from edgekit.exporting.formats.pte_int8 import quantize_pt2e
    from edgekit.exporting.int8 import torch_sensitivity as ts

    x = np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype(np.float32)
    example = torch.from_numpy(x[:2])
    converted = quantize_pt2e(harmful_net(), example, x, "static", True, ("conv2",),
                              fold=False)
    rows = ts.pt2e_layer_sqnr(converted, ts.batches(example, x, 32))
    assert {r.module for r in rows} == {"conv1", "conv3", "head"}


def _quantize(fmt: str, net, x: np.ndarray, exclude: tuple[str, ...], memo: dict | None):
    """The int8 model of `fmt` as its exporter makes it (a torch module to run)."""
    example = torch.from_numpy(x[:2])
    if fmt == "pte-int8":
        from edgekit.exporting.formats.pte_int8 import quantize_pt2e

        return quantize_pt2e(net, example, x, "static", True, exclude, memo=memo)
    from edgekit.exporting.formats.torchscript_int8 import quantize_static_fx, quantized_engine

    with quantized_engine("x86"):
        return quantize_static_fx(net, example, x, "x86", "entropy", exclude, memo)[0]


@pytest.mark.parametrize("fmt", ["torchscript-int8", "pte-int8"])
def test_variants_reuse_the_first_calibration(fmt, monkeypatch):
    """The search's variants (modules kept fp32) take the calibrated observers of the full
    int8 model (edgekit.exporting.int8.observers) instead of calibrating again: the same
    model as one calibrated afresh, bit for bit."""
    if fmt == "pte-int8":
        pytest.importorskip("executorch")
    from edgekit.exporting.formats.torchscript_int8 import quantized_engine
    from edgekit.exporting.int8 import observers

    x = np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype(np.float32)
    net, memo = harmful_net(), {}
    _quantize(fmt, net, x, (), memo)
    restored, restore = [], observers.restore
    monkeypatch.setattr(observers, "restore", lambda p, s, *f: restored.append(
        restore(p, s, *f)) or restored[-1])
    reused = _quantize(fmt, net, x, ("conv2",), memo)
    fresh = _quantize(fmt, net, x, ("conv2",), None)
    assert restored == [True, False]  # the variant copied them; without a memo: calibrated
    with torch.no_grad(), quantized_engine("x86"):
        assert torch.equal(reused(torch.from_numpy(x)), fresh(torch.from_numpy(x)))


def test_per_tensor_weights_reuse_the_per_channel_calibration(monkeypatch):
    """The .pte search's per-tensor variant: its activation observers are the per-channel
    calibration's, its weight observers (constants) filled by one batch; the same model as
    one calibrated afresh, bit for bit, without running the calibration inputs again."""
    pytest.importorskip("executorch")
    from edgekit.exporting.formats.pte_int8 import quantize_pt2e
    from edgekit.exporting.int8 import observers

    x = np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32)
    example = torch.from_numpy(x[:2])
    net, memo = harmful_net(), {}
    quantize_pt2e(net, example, x, "static", True, memo=memo)
    restored, restore = [], observers.restore
    monkeypatch.setattr(observers, "restore", lambda p, s, *f: restored.append(
        restore(p, s, *f)) or restored[-1])
    reused = quantize_pt2e(net, example, x, "static", False, memo=memo)
    fresh = quantize_pt2e(net, example, x, "static", False)
    assert restored == [True, False]
    with torch.no_grad():
        assert torch.equal(reused(torch.from_numpy(x[:32])), fresh(torch.from_numpy(x[:32])))
    # An activation's observer the calibration did not save: nothing copied, calibrated.
    states = memo["pt2e-observers"]
    del states[next(sig for sig in states if sig[0] == "HistogramObserver")]
    restored.clear()
    quantize_pt2e(net, example, x, "static", False, memo=memo)
    assert restored == [False]


def test_a_qat_artifact_is_not_searched(harmful):
    """A QAT run's int8 takes learned ranges: re-calibrated variants describe another model
    (its SQNR-only table: tests/test_qat.py)."""
    from edgekit import formats as catalog
    from edgekit.exporting.check import Check
    from edgekit.exporting.choose import Candidate
    from edgekit.exporting.int8 import mixed

    failed = Candidate(catalog.get("onnx-int8"), harmful.int8, {"name": "qat-u8s8-pc"},
                       Check("model.int8.onnx", "onnx", "int8", 1, False, score=0.5,
                             drop_points=5.0), learned=True)
    checker = SimpleNamespace(held=SimpleNamespace(task=SimpleNamespace(metric="accuracy")),
                              of=lambda f: lambda p: pytest.fail("nothing is checked"))
    assert mixed.rescue(SimpleNamespace(qat=object()), [failed], checker, 0) == ([], {})


class _ViewNet(torch.nn.Module):
    """A user's conv net that flattens with `view`, which a channels-last tensor refuses."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(y.view(y.size(0), -1))


class _FlattenNet(_ViewNet):
    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.mark.parametrize("net", [_ViewNet, _FlattenNet])
def test_reference_outputs_are_the_models_own_in_any_memory_layout(net):
    """Images run channels-last (faster convolutions) in small batches; a forward that
    needs contiguous tensors falls back to them; the outputs are the model's either way."""
    from edgekit.exporting.check import IMAGE_BATCH, reference_outputs

    torch.manual_seed(0)
    model = net().eval()
    x = np.random.default_rng(0).standard_normal((IMAGE_BATCH * 2 + 3, 3, 8, 8))
    x = x.astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = reference_outputs(model, x, 256)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
