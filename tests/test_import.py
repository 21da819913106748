"""Your own model through the whole path: `edgekit import` of a module, an ONNX file, a
multi-output model on unlabeled images; then export, predict, tune and serve, as a user would.

The user's files are written here the way a user outside the project has them: `my_net.py`
(a small CNN class and a two-output model), weights trained with a plain PyTorch loop on
scikit-learn's digits (upscaled to 32x32), saved as a state dict, and a folder of PNGs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import edgekit

from edgekit.cli import main

MY_NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class TwoHeads(nn.Module):
    """An embedding and three sigmoid scores: outputs that are not class logits."""

    def __init__(self):
        super().__init__()
        self.body = Net().features
        self.embed = nn.Linear(16 * 8 * 8, 6)
        self.score = nn.Linear(16 * 8 * 8, 3)

    def forward(self, x):
        h = torch.flatten(self.body(x), 1)
        return {"embedding": self.embed(h), "scores": torch.sigmoid(self.score(h))}


def needs_args(width):
    return Net()


class Mlp(nn.Module):
    """16 numbers in, 4 classes out: a model of array inputs."""

    def __init__(self, num_outputs=4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, num_outputs))

    def forward(self, x):
        return self.net(x)


NOT_A_MODEL = 3
'''


def _digits32():
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = np.stack([np.asarray(Image.fromarray((x * 255 / 16).astype(np.uint8))
                                .resize((32, 32), Image.BILINEAR)) for x in d.images])
    return imgs, d.target


@pytest.fixture(scope="session")
def user(tmp_path_factory) -> dict:
    """A user's project: my_net.py, trained weights, a labeled and an unlabeled image folder,
    the model's own ONNX export, and a digit-3 image the model calls 3."""
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("user")
    (root / "my_net.py").write_text(MY_NET)
    sys.path.insert(0, str(root))
    try:
        import my_net
    finally:
        sys.path.remove(str(root))
    imgs, target = _digits32()
    x = torch.tensor(imgs[:, None] / 255.0, dtype=torch.float32)
    y = torch.tensor(target)
    torch.manual_seed(0)
    model = my_net.Net()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(8):  # a plain PyTorch loop, as the user trained it
        for i in range(0, 1400, 32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 32]), y[i:i + 32]).backward()
            opt.step()
    model.eval()
    save_file(model.state_dict(), root / "w.safetensors")
    torch.save(model.state_dict(), root / "w.pt")
    torch.save(model, root / "whole.pt")  # a pickled model: must be refused
    save_file(my_net.TwoHeads().state_dict(), root / "two.safetensors")
    digits, flat = root / "digits", root / "flat"
    for i in range(1400, 1797):
        (digits / str(target[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(imgs[i]).save(digits / str(target[i]) / f"{i}.png")
    flat.mkdir()
    for i in range(1400, 1480):
        Image.fromarray(imgs[i]).save(flat / f"{i}.png")
    with torch.no_grad():
        p = torch.softmax(model(x[1400:]), 1).numpy()
    threes = [i for i in range(len(p)) if target[1400 + i] == 3 and p[i].argmax() == 3]
    three = digits / "3" / f"{1400 + max(threes, key=lambda i: p[i, 3])}.png"
    program = torch.export.export(model, (x[:2],),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(root / "model.pt2"))
    torch.onnx.export(model, (x[:2],), str(root / "model.onnx"), dynamo=True,
                      input_names=["image"], output_names=["logits"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},))
    return {"root": root, "digits": digits, "flat": flat, "three": three,
            "accuracy": float((p.argmax(1) == target[1400:]).mean())}


def import_args(user, out, *extra) -> list:
    return ["import", f"{user['root'] / 'my_net.py'}:Net", "--weights",
            user["root"] / "w.safetensors", "--data", user["digits"], "--mode", "L",
            "--image-size", "32", "--normalize", "none", "--out", out, *extra]


@pytest.mark.slow
def test_a_user_module_goes_through_import_export_predict_tune_and_serve(user, tmp_path):
    from edgekit.bench.loadtest import served

    run = tmp_path / "R"
    out = edgekit(*import_args(user, run)).stdout
    assert "10 classes" in out and "fp32 accuracy" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["source"] == {"kind": "python", "spec": "source/my_net.py:Net"}
    assert (run / "source" / "my_net.py").read_text() == MY_NET  # the run keeps its own copy
    # The held-out half of the user's folder, measured with the user's own model.
    assert metrics["labels"] == [str(i) for i in range(10)] and metrics["labeled"]
    edgekit("export", run, "--onnx", "--pte", "--int8", "--keep-candidates")
    report = json.loads((run / "export" / "report.json").read_text())
    rows = {a["file"]: a for a in report["artifacts"]}
    assert {"model.onnx", "model.int8.onnx", "model.pte", "model.int8.pte"} <= set(rows)
    assert all(a["passed"] for a in rows.values()), rows
    assert report["labeled"] and report["pytorch"]["score"] == pytest.approx(
        metrics["test_accuracy"])
    pred = edgekit("predict", run / "export" / "model.int8.onnx", user["three"], "--json")
    assert json.loads(pred.stdout)["label"] == "3"
    edgekit("verify", run / "export")
    tuned = edgekit("tune", run / "export", "--threads", "1", "--seconds", "0.2")
    assert "tuned.json" in tuned.stdout
    with served(run / "export") as s:
        body = user["three"].read_bytes()
        req = urllib.request.Request(s.url + "/predict", data=body,
                                     headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert json.loads(r.read())["label"] == "3"


GUARD = """
import builtins, sys
real = builtins.__import__
def guard(name, *a, **k):
    if name == "torch" or name.startswith("torch."):
        raise ImportError("torch was imported: " + name, name=name)
    return real(name, *a, **k)
builtins.__import__ = guard
from edgekit.cli import main
sys.argv = ["edgekit"] + sys.argv[1:]
main()
"""


def no_torch(*args) -> subprocess.CompletedProcess:
    """The real CLI in a process where importing torch fails."""
    return subprocess.run([sys.executable, "-c", GUARD, *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_an_onnx_file_imports_and_exports_int8_without_torch(user, tmp_path):
    run = tmp_path / "O"
    imp = no_torch("import", user["root"] / "model.onnx", "--data", user["digits"],
                   "--normalize", "none", "--out", run)
    assert imp.returncode == 0, imp.stderr
    assert "input 1x32x32" in imp.stdout  # read from the ONNX file
    exp = no_torch("export", run, "--onnx", "--int8")
    assert exp.returncode == 0, exp.stderr
    report = json.loads((run / "export" / "report.json").read_text())
    int8 = next(a for a in report["artifacts"] if a["file"] == "model.int8.onnx")
    assert int8["passed"] and report["reference"] == "onnxruntime on the imported ONNX"
    assert report["pytorch"]["score"] == pytest.approx(
        json.loads((run / "metrics.json").read_text())["test_accuracy"])
    pte = no_torch("export", run, "--onnx", "--pte")
    assert pte.returncode == 1
    assert pte.stderr.strip().splitlines() == [
        f"error: --pte needs a PyTorch source; {str(run)!r} was imported from an ONNX file: "
        "export it with --onnx (and --int8)"]


@pytest.mark.slow
def test_a_multi_output_model_on_unlabeled_images(user, tmp_path):
    run = tmp_path / "M"
    out = edgekit("import", f"{user['root'] / 'my_net.py'}:TwoHeads", "--weights",
                  user["root"] / "two.safetensors", "--data", user["flat"], "--mode", "L",
                  "--image-size", "32", "--out", run).stdout
    assert "embedding [6], scores [3]" in out and "unlabeled" in out
    edgekit("export", run, "--onnx", "--int8", "--tune-seconds", "0.3")
    report = json.loads((run / "export" / "report.json").read_text())
    assert report["task"] == "raw" and not report["labeled"]
    assert all(a["passed"] for a in report["artifacts"])
    int8 = next(a for a in report["artifacts"] if a["file"] == "model.int8.onnx")
    assert 0 < int8["relative_error"] < 0.05  # measured against fp32's own outputs
    assert "unlabeled" in (run / "export" / "report.md").read_text()
    image = sorted(user["flat"].iterdir())[0]
    got = json.loads(edgekit("predict", run / "export" / "model.onnx", image, "--json").stdout)
    assert set(got["outputs"]) == {"embedding", "scores"}
    assert np.shape(got["outputs"]["embedding"]) == (6,)
    assert all(0 <= s <= 1 for s in got["outputs"]["scores"])


@pytest.mark.slow
def test_unlabeled_classifier_is_gated_by_agreement(user, tmp_path):
    run = tmp_path / "U"
    edgekit("import", f"{user['root'] / 'my_net.py'}:Net", "--weights",
            user["root"] / "w.pt", "--data", user["flat"], "--mode", "L", "--image-size", "32",
            "--labels", "zero,one,two,three,four,five,six,seven,eight,nine",
            "--out", run)
    edgekit("export", run, "--onnx", "--int8")
    report = json.loads((run / "export" / "report.json").read_text())
    assert not report["labeled"] and report["pytorch"]["score"] == 1.0  # fp32 agrees with itself
    int8 = next(a for a in report["artifacts"] if a["file"] == "model.int8.onnx")
    assert int8["score"] == int8["top1_agreement"]
    got = json.loads(edgekit("predict", run / "export" / "model.int8.onnx", user["three"],
                             "--json").stdout)
    assert got["label"] == "three"


def run_cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.mark.parametrize("case, expected", [
    ("no-file", "model file"),
    ("bad-module", "does not import: ModuleNotFoundError"),
    ("no-name", "has no 'Nett'; it defines: "),
    ("not-module", "is a int, not an nn.Module"),
    ("needs-args", "needs argument(s) width"),
    ("whole-pickle", "is not a state dict (a whole pickled model is never unpickled)"),
    ("wrong-weights", "does not fit Net: "),
    ("rgb", "the model rejects input of shape 3x32x32"),
    ("labels", "3 labels in --labels, but the model gives 10 outputs"),
    ("empty", "holds no images and no class folders"),
    ("no-size", "give --image-size N"),
    ("exists", "already exists"),
])
def test_bad_input_gets_one_line_and_leaves_nothing(user, tmp_path, case, expected):
    root = user["root"]
    out = tmp_path / "R"
    net = f"{root / 'my_net.py'}:Net"
    args = {
        "no-file": [f"{tmp_path / 'nope.py'}:Net", "--weights", root / "w.pt"],
        "bad-module": ["no_such_package.nets:Net"],
        "no-name": [f"{root / 'my_net.py'}:Nett"],
        "not-module": [f"{root / 'my_net.py'}:NOT_A_MODEL"],
        "needs-args": [f"{root / 'my_net.py'}:needs_args"],
        "whole-pickle": [net, "--weights", root / "whole.pt"],
        "wrong-weights": [net, "--weights", root / "two.safetensors"],
        "rgb": [net, "--weights", root / "w.pt", "--mode", "RGB"],
        "labels": [net, "--weights", root / "w.pt", "--labels", "a,b,c"],
        "empty": [net, "--data", tmp_path / "empty"],
        "no-size": [net, "--image-size", "0"],
        "exists": [net],
    }[case]
    (tmp_path / "empty").mkdir()
    if case == "exists":
        out.mkdir()
    base = {"--data": user["digits"], "--mode": "L", "--image-size": "32"}
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    base.update(flags)
    cmd = ["import", args[0], "--out", out]
    for k, v in base.items():
        if v is not None:
            cmd += [k, v]
    if case == "labels":
        cmd[cmd.index("--data") + 1] = user["flat"]
    code, output = run_cli(*cmd)
    assert code == 1, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], output
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("empty", "R")]
    assert not leftovers and (case == "exists" or not out.exists())


def test_wrong_weights_name_the_keys_with_counts(user, tmp_path):
    code, output = run_cli("import", f"{user['root'] / 'my_net.py'}:Net", "--weights",
                           user["root"] / "two.safetensors", "--data", user["digits"],
                           "--mode", "L", "--image-size", "32", "--out", tmp_path / "R")
    assert code == 1
    assert "6 missing (features.0.weight, features.0.bias, features.3.weight, ...)" in output
    assert "8 unexpected (body.0.bias, body.0.weight, body.3.bias, ...)" in output
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(user["root"] / "w.safetensors")
    state["head.weight"], state["head.bias"] = torch.zeros(5, 1024), torch.zeros(5)
    save_file(state, tmp_path / "five.safetensors")
    code, output = run_cli("import", f"{user['root'] / 'my_net.py'}:Net", "--weights",
                           tmp_path / "five.safetensors", "--data", user["digits"],
                           "--mode", "L", "--image-size", "32", "--out", tmp_path / "R")
    assert code == 1 and "2 of another shape, file vs model (head.weight (5, 1024) vs " \
        "(10, 1024), head.bias (5,) vs (10,)) key(s)" in output


def test_onnx_sources_that_do_not_fit(tmp_path, user):
    import onnx
    from onnx import TensorProto, helper

    def save(name, inputs, shape):
        graph = helper.make_graph(
            [helper.make_node("Identity", [inputs[0]], ["y"])], "g",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in inputs],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
        path = tmp_path / name
        onnx.save(helper.make_model(graph), str(path))
        return path

    two = save("two.onnx", ["a", "b"], ["N", 1, 32, 32])
    dyn = save("dyn.onnx", ["a"], ["N", 1, "H", "W"])
    code, output = run_cli("import", two, "--data", user["digits"], "--out", tmp_path / "R")
    assert code == 1 and "has 2 inputs (a, b); edgekit takes models of one input" in output
    code, output = run_cli("import", dyn, "--data", user["digits"], "--out", tmp_path / "R")
    assert code == 1 and "has dynamic dimensions (batch x 1 x ? x ?); give --input-shape" \
        in output
    code, output = run_cli("import", tmp_path / "model.ts", "--data", user["digits"], "--out",
                           tmp_path / "R")
    assert code == 1 and "is not a source edgekit imports" in output


def test_the_api_imports_lazily_and_returns_a_run(user, tmp_path):
    probe = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import sys, edgekit
        assert callable(edgekit.import_model) and callable(edgekit.export)
        print(sorted(m for m in ("torch", "onnx", "onnxruntime") if m in sys.modules))
        """)], capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == "[]", probe.stderr
    import edgekit

    run = edgekit.import_model(f"{user['root'] / 'my_net.py'}:Net", tmp_path / "R",
                               weights=user["root"] / "w.safetensors", data=user["digits"],
                               mode="L", image_size=32)
    assert isinstance(run, edgekit.Run) and run.task == "classification"
    assert run.source_kind == "python" and run.labels == [str(i) for i in range(10)]
    assert 0.5 < run.score <= 1.0


@pytest.mark.slow
def test_a_torch_export_program_imports_and_exports(user, tmp_path):
    run = tmp_path / "P"
    out = edgekit("import", user["root"] / "model.pt2", "--data", user["digits"], "--mode", "L",
                  "--out", run).stdout
    assert "input 1x32x32" in out  # read from the program
    edgekit("export", run, "--onnx", "--int8")
    report = json.loads((run / "export" / "report.json").read_text())
    assert all(a["passed"] for a in report["artifacts"])
    assert report["int8"]["method"] == "static"  # the program's convolutions, seen as operators


@pytest.mark.slow
def test_without_data_fp32_exports_and_int8_is_refused(user, tmp_path):
    run = tmp_path / "N"
    edgekit("import", f"{user['root'] / 'my_net.py'}:Net", "--weights",
            user["root"] / "w.safetensors", "--mode", "L", "--image-size", "32",
            "--out", run)  # no --data
    edgekit("export", run, "--onnx")
    assert (run / "export" / "model.onnx").is_file()
    int8 = edgekit("export", run, "--onnx", "--int8", check=False)
    assert int8.returncode == 1 and len(int8.stderr.strip().splitlines()) == 1
    assert "int8 needs real inputs to calibrate and check on" in int8.stderr


@pytest.mark.slow
def test_array_inputs_in_class_folders(user, tmp_path):
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(user["root"]))
    try:
        import my_net
    finally:
        sys.path.remove(str(user["root"]))
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (4, 16))
    data = tmp_path / "arrays"
    x, y = [], []
    for k in range(4):
        (data / f"c{k}").mkdir(parents=True)
        for i in range(40):
            v = (centers[k] + rng.normal(0, 1, 16)).astype(np.float32)
            np.save(data / f"c{k}" / f"{i}.npy", v)
            x.append(v)
            y.append(k)
    model = my_net.Mlp()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    xt, yt = torch.tensor(np.array(x)), torch.tensor(y)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    save_file(model.state_dict(), tmp_path / "mlp.safetensors")
    run = tmp_path / "A"
    out = edgekit("import", f"{user['root'] / 'my_net.py'}:Mlp", "--weights",
                  tmp_path / "mlp.safetensors", "--data", data, "--out", run).stdout
    assert "input 16, 4 classes" in out
    assert json.loads((run / "metrics.json").read_text())["labels"] == ["c0", "c1", "c2", "c3"]
    edgekit("export", run, "--onnx", "--int8")
    report = json.loads((run / "export" / "report.json").read_text())
    assert report["int8"]["method"] == "dynamic" and all(a["passed"] for a in report["artifacts"])
    got = json.loads(edgekit("predict", run / "export" / "model.int8.onnx",
                             data / "c2" / "0.npy", "--json").stdout)
    assert got["label"] == "c2"


@pytest.mark.slow
def test_your_architecture_in_a_recipe(user, tmp_path):
    run = tmp_path / "T"
    edgekit("train", "lenet5", "--set", f"model.name={user['root'] / 'my_net.py'}:Net",
            "--set", "train.epochs=1", "--out", run, "--no-progress")
    recipe = (run / "recipe.yaml").read_text()
    assert "name: source/my_net.py:Net" in recipe and (run / "source" / "my_net.py").is_file()
    edgekit("export", run, "--onnx")
    assert (run / "export" / "model.onnx").is_file()


@pytest.mark.slow
def test_a_torchvision_architecture_with_its_weights(user, tmp_path):
    import torchvision
    from PIL import Image
    from safetensors.torch import save_file

    torch_model = torchvision.models.get_model("mobilenet_v3_small", weights=None)
    save_file(torch_model.state_dict(), tmp_path / "mnv3.safetensors")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(
            photos / f"{i}.jpg")
    run = tmp_path / "V"
    out = edgekit("import", "torchvision:mobilenet_v3_small", "--weights",
                  tmp_path / "mnv3.safetensors", "--data", photos, "--resize", "72",
                  "--image-size", "64", "--normalize", "imagenet", "--out", run).stdout
    assert "input 3x64x64, 1000 classes" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["preprocess"]["resize"] == 72
    assert metrics["preprocess"]["mean"] == [0.485, 0.456, 0.406]


@pytest.mark.slow
def test_the_readme_api_example_runs(user, tmp_path):
    """The README's Python example, run as written in a folder holding the user's files."""
    import shutil

    text = (Path(__file__).parents[1] / "README.md").read_text()
    code = text.split("<!-- api-example -->")[1].split("<!-- /api-example -->")[0]
    code = code.split("```python")[1].split("```")[0]
    for name in ("my_net.py", "w.safetensors"):
        shutil.copy(user["root"] / name, tmp_path / name)
    shutil.copytree(user["digits"], tmp_path / "digits")
    three = user["three"].relative_to(user["root"]).as_posix()  # a 3 the model calls 3
    code = code.replace("digits/3/1418.png", three)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("run: runs/mine (source/my_net.py:Net, input 1x32x32")
    assert "'model.int8.pte': True" in lines[1] and "False" not in lines[1]
    assert lines[-1] == "3"
