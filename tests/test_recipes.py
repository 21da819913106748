"""Every vision recipe end to end on tiny data in its real format, and the offline targets.

Each recipe trains through its real loader (generated MNIST IDX files, CIFAR-10 batches,
ImageFolder PNGs, a weights file for the transfer recipes) and exports through the CLI with
`--onnx --int8 --torchscript`; no test touches the network (data.download=never).
"""

import json
from pathlib import Path

import datagen
import pytest
import torch
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.data import vision
from edgekit.recipe import list_recipes, load_recipe

pytestmark = pytest.mark.slow

# The datasets the vision recipes read, and how a test makes each in its real format.
IMAGE_DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "imagefolder")
VISION = [r for r in list_recipes() if load_recipe(r).data.name in IMAGE_DATASETS]
# Pretrained models at a size that keeps the test short (the ImageNet stem needs >= 112 px).
SMALLER = {"resnet18": ["data.image_size=112", "data.resize=128"],
           "vgg16": ["data.image_size=32", "data.resize=36"]}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("data")
    datagen.mnist(root, "MNIST")
    datagen.mnist(root, "FashionMNIST")
    sums = datagen.cifar10(root)
    datagen.imagefolder(root / "images", ("cat", "dog", "fox"), per_class=12)
    return root, sums


def weights_file(model: str, folder: Path) -> Path:
    """A torchvision-layout state dict (random values, ImageNet head) for `model`."""
    import torchvision

    path = folder / f"{model}.pth"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(torchvision.models.get_model(model, weights=None).state_dict(), path)
    return path


def invoke(*args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_every_vision_recipe_is_covered():
    assert {"lenet5", "mnist-convnet", "mnist-fc", "fashion-mnist", "cifar10-net",
            "cifar10-vgg", "resnet18", "mobilenet_v2", "transfer-resnet18",
            "transfer-vgg16"} <= set(VISION)


@pytest.mark.parametrize("name", VISION)
def test_recipe_trains_on_its_real_format_and_exports(name, data_root, tmp_path, monkeypatch):
    root, sums = data_root
    monkeypatch.setattr(vision, "CIFAR10_CHECKSUMS", sums)  # the loader's own md5 seam
    recipe = load_recipe(name)
    dataset = "mnist" if recipe.data.name == "digits" else recipe.data.name  # lenet5's real data
    folder = root / "images" if dataset == "imagefolder" else root
    sets = ["train.epochs=1", "data.download=never", f"data.name={dataset}",
            f"data.root={folder}", "data.fallback="]
    if recipe.model.pretrained:
        sets += [f"model.pretrained={weights_file(recipe.model.name, tmp_path)}",
                 *SMALLER[recipe.model.name]]
    run = tmp_path / "run"
    out = invoke("train", name, *[a for s in sets for a in ("--set", s)], "--out", run,
                 "--no-progress")
    assert out.startswith(f"run: {run}")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == dataset and metrics["test_samples"] > 0
    # Export verifies every artifact: fp32 parity with PyTorch is enforced. One epoch on tiny
    # data leaves int8 free to drift (the offline-target test holds int8 to the recipe).
    # VGG-16 (138 M parameters) exports the ONNX pair only: its TorchScript and ExecuTorch
    # lowering took 3 of CI's minutes, and the smaller recipes exercise those formats.
    torch_formats = [] if recipe.model.name == "vgg16" else ["--torchscript", "--pte"]
    invoke("export", run, "--onnx", "--int8", *torch_formats, "--max-int8-drop", "100",
           "--tune-seconds", "0")  # the first int8 layout, untimed: speed is not tested
    report = json.loads((run / "export" / "report.json").read_text())
    files = {r["file"] for r in report["artifacts"]}
    assert files >= {"model.onnx", "model.int8.onnx", *(["model.ts"] if torch_formats else [])}
    for pte in ("model.pte", "model.int8.pte") if torch_formats else ():  # or why not
        assert pte in files or [n for n in report["notes"]
                                if n.startswith(f"{pte} was not written: ")], pte
    assert all(r["passed"] for r in report["artifacts"])
    assert report["pytorch"]["accuracy"] == pytest.approx(metrics["test_accuracy"])
    # Every image recipe's export proves the fast image paths against the exact one (issue 27)
    fast = report["fast_preprocessing"]
    assert fast["samples"] > 0 and {"allowed", "drop_points", "max_pixel_diff"} <= set(fast)
    assert {"allowed", "drop_points", "max_pixel_diff"} <= set(fast["opencv"])
    text = (run / "export" / "report.md").read_text()
    assert "Fast image preprocessing" in text and "With OpenCV's resize" in text


@pytest.mark.parametrize("name, target", [("resnet18", 0.97), ("mobilenet_v2", 0.95)])
def test_offline_default_meets_its_target_and_survives_int8(name, target, tmp_path,
                                                            monkeypatch):
    """A fresh offline machine: no image folder, so the recipe's digits fallback trains."""
    monkeypatch.chdir(tmp_path)  # data/images does not exist here
    out = CliRunner().invoke(main, ["train", name, "--out", "run", "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "training on the offline digits dataset instead" in out.output  # said on stderr
    metrics = json.loads(Path("run/metrics.json").read_text())
    assert metrics["dataset"] == "digits" and metrics["test_samples"] == 360
    assert metrics["test_accuracy"] >= target, metrics["test_accuracy"]
    # The recipe's max_int8_drop; the first int8 layout, untimed (each layout is verified alike)
    invoke("export", "run", "--onnx", "--int8", "--torchscript", "--tune-seconds", "0")
    rows = {r["file"]: r for r in json.loads(Path("run/export/report.json").read_text())
            ["artifacts"]}
    assert rows["model.int8.onnx"]["accuracy_drop_points"] <= load_recipe(
        name).export.max_int8_drop
    assert rows["model.onnx"]["accuracy"] == pytest.approx(metrics["test_accuracy"])
