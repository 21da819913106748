"""The real loaders on files in the real formats: MNIST IDX, CIFAR-10 batches, ImageFolder PNGs."""

import socket
import threading
from pathlib import Path

import datagen
import numpy as np
import pytest

from edgekit.data import DataUnavailable, build_dataset, vision
from edgekit.data.images import PreparedImages
from edgekit.errors import EdgekitError
from edgekit.recipe import load_recipe
from edgekit.runtime.preprocess import image_to_array, load_image


def data_cfg(*overrides):
    return load_recipe("lenet5", ["data.download=never", *overrides]).data


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_idx_files_through_torchvision(tmp_path, name, folder):
    datagen.mnist(tmp_path, folder, n_train=50, n_test=20)
    data = build_dataset(data_cfg(f"data.name={name}", f"data.root={tmp_path}",
                                  "data.image_size=28"))
    assert (len(data.train), len(data.test), data.input_shape) == (50, 20, (1, 28, 28))
    assert len(data.labels) == 10 and data.preprocess["mode"] == "L"
    if name == "fashion-mnist":
        assert data.labels[0] == "T-shirt/top"
    # The arrays are the IDX pixels, scaled and normalized as the runtime would.
    raw, _ = datagen.pattern_images(50, 10, (28, 28), 1, seed=0)
    spec = data.preprocess
    expect = (raw[3] / 255 - spec["mean"][0]) / spec["std"][0]
    np.testing.assert_allclose(data.train.x[3][0], expect, atol=1e-5)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_published_gz_files_are_unpacked_offline(tmp_path, monkeypatch, name, folder):
    import gzip
    import hashlib

    import torchvision

    datagen.mnist(tmp_path, folder, n_train=50, n_test=20)
    raw = tmp_path / folder / "raw"
    resources = []
    for path in sorted(raw.iterdir()):  # only the .gz files stay, as a download leaves them
        packed = raw / f"{path.name}.gz"
        packed.write_bytes(gzip.compress(path.read_bytes(), mtime=0))
        resources.append((packed.name, hashlib.md5(packed.read_bytes()).hexdigest()))
        path.unlink()
    cls = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}
    monkeypatch.setattr(cls[name], "resources", resources)  # the generated files are "published"
    cfg = data_cfg(f"data.name={name}", f"data.root={tmp_path}", "data.image_size=28")
    data = build_dataset(cfg)
    assert (len(data.train), len(data.test)) == (50, 20)
    raw_x, _ = datagen.pattern_images(50, 10, (28, 28), 1, seed=0)
    spec = data.preprocess
    np.testing.assert_allclose(data.train.x[3][0], (raw_x[3] / 255 - spec["mean"][0]) /
                               spec["std"][0], atol=1e-5)
    assert sorted(p.name for p in raw.iterdir() if p.suffix != ".gz") == sorted(
        Path(f).stem for f, _ in resources)
    # A .gz that is not the published file is refused, naming it, and nothing is unpacked.
    (raw / "t10k-images-idx3-ubyte").unlink()
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00" * 32))
    with pytest.raises(DataUnavailable, match="t10k-images-idx3-ubyte.gz' is not the published"):
        build_dataset(cfg)
    assert not (raw / "t10k-images-idx3-ubyte").exists()


def test_cifar10_batches_need_matching_checksums(tmp_path, monkeypatch):
    sums = datagen.cifar10(tmp_path, n_train=40, n_test=10)
    cfg = data_cfg("data.name=cifar10", f"data.root={tmp_path}")
    with pytest.raises(DataUnavailable, match="Dataset not found or corrupted"):
        build_dataset(cfg)  # torchvision's md5 check is on: generated files fail it
    monkeypatch.setattr(vision, "CIFAR10_CHECKSUMS", sums)
    data = build_dataset(cfg)
    assert (len(data.train), len(data.test), data.input_shape) == (40, 10, (3, 32, 32))
    assert data.labels[:2] == ["airplane", "automobile"]
    # A file changed after its sum was recorded is still refused.
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:-1] + b"\x00")
    with pytest.raises(DataUnavailable, match="corrupted"):
        build_dataset(cfg)


def test_cifar10_seam_keeps_torchvision_checks():
    import torchvision

    base = torchvision.datasets.CIFAR10
    assert vision.cifar10_class({}) is base
    cls = vision.cifar10_class({"data_batch_1": "0" * 32})
    assert issubclass(cls, base) and cls._check_integrity is base._check_integrity
    assert cls.train_list[0] == ["data_batch_1", "0" * 32]
    assert cls.train_list[1:] == base.train_list[1:] and cls.test_list == base.test_list


@pytest.mark.parametrize("split", [False, True])
def test_imagefolder_of_pngs(tmp_path, split):
    datagen.imagefolder(tmp_path, ("cat", "dog", "owl"), per_class=9, size=(30, 44), split=split)
    data = build_dataset(data_cfg("data.name=imagefolder", f"data.root={tmp_path}",
                                  "data.image_size=24", "data.resize=28"))
    assert data.labels == ["cat", "dog", "owl"]
    assert data.input_shape == (3, 24, 24)
    assert (len(data.train), len(data.test)) == ((27, 9) if split else (21, 6))
    assert set(data.test.y) == {0, 1, 2}  # stratified: every class held out
    assert data.preprocess["resize"] == 28 and data.preprocess["size"] == [24, 24]
    # A PNG from the folder goes through the runtime to exactly the training array.
    img = data.test.image(2)
    img.save(tmp_path / "again.png")
    np.testing.assert_array_equal(
        image_to_array(load_image(tmp_path / "again.png"), data.preprocess), data.test.x[2])


def test_imagefolder_errors_name_the_folder(tmp_path):
    with pytest.raises(DataUnavailable, match=f"no image folder at '{tmp_path / 'none'}'"):
        build_dataset(data_cfg("data.name=imagefolder", f"data.root={tmp_path / 'none'}"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataUnavailable, match="no class folders; expected a folder of class"):
        build_dataset(data_cfg("data.name=imagefolder", f"data.root={tmp_path / 'empty'}"))
    datagen.imagefolder(tmp_path / "one", ("cat",), per_class=4)
    with pytest.raises(EdgekitError, match="has 1 class folder; expected at least 2"):
        build_dataset(data_cfg("data.name=imagefolder", f"data.root={tmp_path / 'one'}"))


def test_imagenet_normalization_for_pretrained_backbones(tmp_path):
    datagen.imagefolder(tmp_path, per_class=4)
    data = build_dataset(data_cfg("data.name=imagefolder", f"data.root={tmp_path}",
                                  "data.normalize=imagenet"))
    assert data.preprocess["mean"] == [0.485, 0.456, 0.406]
    gray = build_dataset(data_cfg("data.name=imagefolder", f"data.root={tmp_path}",
                                  "data.normalize=imagenet", "data.channels=1"))
    assert gray.input_shape == (1, 32, 32) and len(gray.preprocess["mean"]) == 1


def test_missing_data_without_fallback_is_one_line(tmp_path):
    with pytest.raises(DataUnavailable) as err:
        build_dataset(data_cfg("data.name=mnist", f"data.root={tmp_path}"))
    message = str(err.value)
    assert message.startswith(f"MNIST is not in '{tmp_path / 'MNIST' / 'raw'}'")
    assert "data.download is never" in message and "\n" not in message


def test_fallback_to_digits_when_the_recipe_names_it(tmp_path):
    data = build_dataset(data_cfg("data.name=imagefolder", f"data.root={tmp_path / 'none'}",
                                  "data.fallback=digits", "data.image_size=16"))
    assert data.name == "digits" and data.input_shape == (1, 16, 16)
    assert "training on the offline digits dataset instead" in data.note
    assert str(tmp_path / "none") in data.note


def test_an_offline_download_fails_fast(tmp_path, monkeypatch):
    """With no network, data.download=auto gives up at the first refused connection (bounded
    by vision.TIMEOUT, not retried, nor left to torchvision's 60 s read), naming the host."""
    calls = []

    def unreachable(address, timeout=None, *args, **kwargs):
        calls.append(timeout)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(DataUnavailable) as err:
        build_dataset(load_recipe("lenet5", ["data.name=mnist", f"data.root={tmp_path}",
                                             "data.download=auto"]).data)
    assert calls == [vision.TIMEOUT]
    assert "the download failed (cannot reach ossci-datasets.s3.amazonaws.com: Network is " \
           "unreachable)" in str(err.value)
    assert not any(tmp_path.rglob("*.gz"))  # nothing half-downloaded


def test_a_hanging_host_is_cut_off(monkeypatch):
    """A name lookup that never answers: the probe gives up after TIMEOUT (+1 s) all the same.
    (That it returns at all is the test: the lookup below answers only after it has.)"""
    released = threading.Event()

    def hang(*args, **kwargs):
        released.wait(600)
        raise OSError(110, "Connection timed out")

    monkeypatch.setattr(vision, "TIMEOUT", 0.3)
    monkeypatch.setattr(socket, "create_connection", hang)
    try:
        assert vision._unreachable("https://example.invalid/x") == \
            "cannot reach example.invalid within 0 s"
    finally:
        released.set()


def test_max_train_samples_takes_a_fixed_subset():
    a = build_dataset(data_cfg("data.max_train_samples=100"))
    b = build_dataset(data_cfg("data.max_train_samples=100"))
    assert len(a.train) == 100 and len(a.test) == 360  # the held-out split is untouched
    np.testing.assert_array_equal(a.train.y, b.train.y)
    np.testing.assert_array_equal(a.train.x, b.train.x)


def test_digits_at_224_in_rgb_for_the_imagenet_models():
    data = build_dataset(data_cfg("data.image_size=224", "data.channels=3",
                                  "data.max_train_samples=64"))
    assert data.input_shape == (3, 224, 224) and data.preprocess["mode"] == "RGB"
    x, _ = data.train[0]
    assert x.shape == (3, 224, 224) and np.allclose(x[0], x[1])  # gray replicated


def test_big_splits_are_prepared_on_demand(monkeypatch):
    from edgekit.data import images

    monkeypatch.setattr(images, "MEMORY_LIMIT", 0)
    lazy = build_dataset(data_cfg())
    monkeypatch.undo()
    eager = build_dataset(data_cfg())
    assert isinstance(lazy.train.x, PreparedImages) and isinstance(eager.train.x, np.ndarray)
    assert lazy.train.x.shape == eager.train.x.shape
    idx = np.array([5, 0, 77])
    np.testing.assert_array_equal(lazy.train.x[idx], eager.train.x[idx])
    np.testing.assert_array_equal(lazy.test.x[3:9], eager.test.x[3:9])
    np.testing.assert_array_equal(lazy.train[10][0], eager.train[10][0])
    assert lazy.fingerprint() == eager.fingerprint()
