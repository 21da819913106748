import numpy as np
import pytest

from edgekit.data import DATASETS, build_dataset, list_datasets
from edgekit.errors import EdgekitError
from edgekit.models import MODELS, build_model, list_models
from edgekit.recipe import DataConfig, list_recipes, load_recipe
from edgekit.registry import Registry


def test_registry_registers_and_lists():
    reg = Registry("widget")

    @reg.register("b")
    def b():
        return "B"

    reg.register("a")(lambda: "A")
    assert reg.names() == ["a", "b"]
    assert reg.get("b") is b
    assert "a" in reg and "c" not in reg


def test_registry_rejects_a_duplicate_name():
    reg = Registry("widget")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a")(lambda: 2)


def test_unknown_name_lists_the_choices():
    with pytest.raises(EdgekitError, match=r"unknown model 'resnet9'; expected one of: .*lenet5"):
        MODELS.get("resnet9")
    # EdgekitError is a ValueError, as torchvision's get_model raises.
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'; expected one of: .*digits"):
        DATASETS.get("imagenet")


# Channels of each image dataset's own images (what data.channels=0 keeps).
NATIVE_CHANNELS = {"digits": 1, "mnist": 1, "fashion-mnist": 1, "cifar10": 3, "imagefolder": 3}


@pytest.mark.parametrize("recipe", list_recipes())
def test_every_recipe_model_runs_on_its_own_data(recipe, uci_files):
    import torch
    from uci_files import data_overrides

    from edgekit.loop import forward
    from edgekit.models import model_options, prepare_model

    r = load_recipe(recipe)
    if r.data.name in NATIVE_CHANNELS and r.data.name != "digits":
        # torchvision's datasets and ImageFolder are not on this machine: the model on the
        # input shape the recipe's data would give (tests/test_recipes.py trains each on files)
        shape = (r.data.channels or NATIVE_CHANNELS[r.data.name], r.data.image_size,
                 r.data.image_size)
        model, head = prepare_model(r.model, shape, num_outputs=10, load_weights=False)
        with torch.inference_mode():
            out = model.eval()(torch.randn(2, *shape))
        assert out.shape == (2, 10)
        assert torch.isfinite(out).all() and head
        return
    r = load_recipe(recipe, data_overrides(r, uci_files))
    data = build_dataset(r.data)
    model = build_model(r.model.name, input_shape=data.input_shape,
                        num_outputs=len(data.labels),
                        **model_options(r.model, data.preprocess)).eval()
    with torch.inference_mode():
        out, _ = forward(model, torch.from_numpy(data.train.x[:3]))
    # (B, K), or (B, T, K) for one output per step
    steps = data.train.y.shape[1:2] if data.task.startswith("sequence") else ()
    assert out.shape == (len(data.train.x[:3]), *steps, len(data.labels))
    assert torch.isfinite(out).all()


# The user's own data of `edgekit import` (and noise when there is none): no recipe's.
IMPORT_DATASETS = {"imagefiles", "arrayfolder", "noise"}


def test_every_model_and_dataset_is_used_by_a_recipe():
    recipes = [load_recipe(r) for r in list_recipes()]
    assert set(list_models()) <= {r.model.name for r in recipes}
    assert set(list_datasets()) - IMPORT_DATASETS <= {r.data.name for r in recipes}


@pytest.mark.parametrize("name", list_datasets())
def test_every_dataset_builds_splits_with_a_contract(name, uci_files, tmp_path, monkeypatch):
    import datagen

    from edgekit.data import vision
    from edgekit.tasks import get_task

    datagen.mnist(tmp_path, "MNIST", n_train=30, n_test=10)
    datagen.mnist(tmp_path, "FashionMNIST", n_train=30, n_test=10)
    monkeypatch.setattr(vision, "CIFAR10_CHECKSUMS", datagen.cifar10(tmp_path, 30, 10))
    datagen.imagefolder(tmp_path / "folder", per_class=8)
    flat = tmp_path / "flat"  # imagefiles: unlabeled images; arrayfolder: .npy inputs
    flat.mkdir()
    for i, p in enumerate(sorted((tmp_path / "folder").rglob("*.png"))[:6]):
        (flat / f"{i}.png").write_bytes(p.read_bytes())
        np.save(flat / f"{i}.npy", np.full((4,), i, np.float32))
    root = {"imagefolder": tmp_path / "folder", "imagefiles": flat}.get(name, tmp_path)
    if name == "arrayfolder":
        root = tmp_path / "arrays"
        root.mkdir()
        for p in flat.glob("*.npy"):
            (root / p.name).write_bytes(p.read_bytes())
    extra = {"noise": {"shape": "3x8x8", "channels": 3}}.get(name, {})
    data = build_dataset(DataConfig(name=name, path=str(uci_files.get(name, "")),
                                    root=str(root), download="never", **extra))
    assert len(data.train) >= len(data.test) > 0
    x, y = data.train[0]
    assert x.shape == data.input_shape
    # Token ids (a model starting with an Embedding) are integers; everything else float32.
    assert x.dtype == (np.int64 if data.preprocess.get("encoding") == "index" else np.float32)
    assert y.dtype == get_task(data.task).target_dtype
    if y.dtype == np.int64:  # class indices
        assert y.min() >= 0 and y.max() < len(data.labels)
    spec = data.preprocess
    shape = {"image": lambda: [len(spec["mean"]), *spec["size"]],
             "array": lambda: spec["shape"],
             "tabular": lambda: [len(spec["columns"])],
             "text": lambda: [spec["length"]] + ([len(spec["vocab"])]
                                                 if spec["encoding"] == "onehot" else [])}
    assert list(data.input_shape) == shape[spec["kind"]]()
    rows = np.arange(len(data.train))[[0, -1]]
    xb, yb = data.train[rows]  # a batch by index, as the training loop reads
    assert xb.shape == (2, *data.input_shape)
    assert yb.tolist() == [data.train[int(i)][1].tolist() for i in rows]


def test_digits_split_is_fixed_stratified_and_normalized():
    a = build_dataset(DataConfig(name="digits"))
    b = build_dataset(DataConfig(name="digits"))
    assert len(a.train) + len(a.test) == 1797
    assert len(a.test) == 360
    np.testing.assert_array_equal(a.test.y, b.test.y)
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert np.bincount(a.test.y).min() >= 35  # every digit is held out, ~36 each
    assert abs(float(a.train.x.mean())) < 0.01 and abs(float(a.train.x.std()) - 1) < 0.01
    other = build_dataset(DataConfig(name="digits", split_seed=1))
    assert not np.array_equal(a.test.y, other.test.y)


@pytest.mark.parametrize("override, message", [
    ("model.name=resnet9", "unknown model 'resnet9'; expected one of: "),
    ("data.name=imagenet", "unknown dataset 'imagenet'; expected one of: "),
])
def test_train_rejects_unknown_names_before_any_work(tmp_path, override, message):
    from edgekit.recipe import load_recipe
    from edgekit.training import train

    with pytest.raises(EdgekitError, match=message):
        train(load_recipe("lenet5", [override]), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_model_rejects_an_input_shape_it_cannot_take():
    with pytest.raises(EdgekitError, match=r"lenet5 takes images of shape \(C, 32, 32\), got "
                                           r"\(1, 28, 28\); set data.image_size=32"):
        build_model("lenet5", input_shape=(1, 28, 28), num_outputs=10)
