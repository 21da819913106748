"""Models: the handbook nets, torchvision models by name, pretrained weights, frozen backbones."""

import pytest
import torch

from edgekit.errors import EdgekitError
from edgekit.models import build_model, head_module, prepare_model
from edgekit.models.zoo import minimum_size
from edgekit.recipe import load_recipe


def model_cfg(*overrides):
    return load_recipe("lenet5", list(overrides)).model


@pytest.mark.parametrize("name, shape, params", [
    ("mnist_convnet", (1, 28, 28), 10 * 25 + 10 + 20 * 90 + 20 + 2000 * 500 + 500 + 5010),
    ("mnist_fc", (1, 28, 28), 784 * 8 + 8 + 8 * 10 + 10),
    ("cifar10_net", (3, 32, 32), 62006),
])
def test_handbook_models_are_layer_for_layer(name, shape, params):
    model = build_model(name, input_shape=shape, num_outputs=10)
    assert sum(p.numel() for p in model.parameters()) == params
    assert build_model(name, input_shape=shape, num_outputs=10)(torch.randn(2, *shape)).shape \
        == (2, 10)


def test_mnist_convnet_ends_in_log_softmax():
    out = build_model("mnist_convnet", input_shape=(1, 28, 28), num_outputs=10)(
        torch.randn(3, 1, 28, 28))
    torch.testing.assert_close(out.exp().sum(1), torch.ones(3))


def test_cifar10_vgg_is_the_handbook_configuration():
    model = build_model("cifar10_vgg", input_shape=(3, 32, 32), num_outputs=10)
    convs = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [64, 128, 256, 256, 512, 512, 512, 512]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 8
    assert (model.classifier.in_features, model.classifier.out_features) == (512, 10)


@pytest.mark.parametrize("name, shape", [("mnist_convnet", (1, 32, 32)),
                                         ("cifar10_net", (3, 28, 28)),
                                         ("cifar10_vgg", (3, 64, 64))])
def test_fixed_size_models_name_the_size_they_take(name, shape):
    with pytest.raises(EdgekitError, match=rf"{name} takes images of shape \(C, \d+, \d+\), got "):
        build_model(name, input_shape=shape, num_outputs=10)


def test_resnet18_stem_follows_the_image_size():
    small = build_model("resnet18", input_shape=(1, 16, 16), num_outputs=10)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert small.conv1.in_channels == 1 and isinstance(small.maxpool, torch.nn.Identity)
    below = build_model("resnet18", input_shape=(3, 111, 111), num_outputs=10)
    assert below.conv1.kernel_size == (3, 3) and isinstance(below.maxpool, torch.nn.Identity)
    big = build_model("resnet18", input_shape=(3, 112, 112), num_outputs=10)
    assert big.conv1.kernel_size == (7, 7) and big.conv1.stride == (2, 2)
    assert isinstance(big.maxpool, torch.nn.MaxPool2d)


def test_mobilenet_v2_first_conv_stride_follows_the_image_size():
    small = build_model("mobilenet_v2", input_shape=(1, 32, 32), num_outputs=10)
    assert small.features[0][0].stride == (1, 1) and small.features[0][0].in_channels == 1
    big = build_model("mobilenet_v2", input_shape=(3, 128, 128), num_outputs=10)
    assert big.features[0][0].stride == (2, 2)


def test_any_torchvision_classifier_by_name_with_channels_adapted():
    model = build_model("squeezenet1_1", input_shape=(1, 48, 48), num_outputs=4)
    assert next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels == 1
    assert model(torch.randn(2, 1, 48, 48)).shape == (2, 4)
    assert head_module(model) == "classifier.1"  # an all-convolutional head


def test_too_small_images_name_the_minimum():
    with pytest.raises(EdgekitError, match="alexnet needs images of at least 63x63 pixels, got "
                                           "32x32; set data.image_size=63 or more"):
        build_model("alexnet", input_shape=(3, 32, 32), num_outputs=10)
    with pytest.raises(EdgekitError, match="inception_v3 needs images of at least 75x75 pixels"):
        build_model("inception_v3", input_shape=(3, 64, 64), num_outputs=10)


def test_inception_v3_keeps_its_aux_logits_where_they_fit():
    from edgekit.models import zoo

    small = zoo._kwargs("inception_v3", (3, 75, 75), 10, 0.0)
    assert zoo._meta_forward("inception_v3", small, (3, 75, 75))  # the aux head can't take 75
    model = build_model("inception_v3", input_shape=(3, 75, 75), num_outputs=10)
    assert model.AuxLogits is None and not hasattr(model, "aux_weight")
    assert zoo._meta_forward("inception_v3", small, (3, 299, 299)) is None
    assert minimum_size("inception_v3", {**small, "aux_logits": False}, (3, 60, 60)) == 75


def test_unknown_model_lists_registered_and_torchvision_names():
    with pytest.raises(EdgekitError, match=r"unknown model 'resnet9'; expected one of: .*lenet5.*"
                                           r"or a torchvision classification model"):
        build_model("resnet9", input_shape=(3, 32, 32), num_outputs=10)


def test_dropout_where_the_model_has_none_is_an_error():
    with pytest.raises(EdgekitError, match="model.dropout: resnet18 takes no dropout setting"):
        build_model("resnet18", input_shape=(3, 32, 32), num_outputs=10, dropout=0.2)
    model = build_model("mobilenet_v2", input_shape=(3, 32, 32), num_outputs=10, dropout=0.3)
    assert model.classifier[0].p == 0.3


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    """A torchvision-layout resnet18 state dict (ImageNet head) as .pth and .safetensors."""
    import torchvision
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=1000).state_dict()
    torch.save(state, folder / "resnet18.pth")
    save_file(state, folder / "resnet18.safetensors")
    return folder, state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_weights_load_all_but_the_new_head(resnet18_weights, suffix):
    folder, state = resnet18_weights
    cfg = model_cfg("model.name=resnet18", f"model.pretrained={folder / ('resnet18' + suffix)}")
    model, head = prepare_model(cfg, (3, 112, 112), num_outputs=2)
    assert head == {"fc.weight", "fc.bias"} and model.fc.out_features == 2
    mine = model.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_backbone_trains_the_head_only(resnet18_weights):
    folder, _ = resnet18_weights
    cfg = model_cfg("model.name=resnet18", f"model.pretrained={folder / 'resnet18.pth'}",
                    "model.freeze=true")
    model, head = prepare_model(cfg, (3, 112, 112), num_outputs=2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == head == {"fc.weight", "fc.bias"}
    frozen = model.frozen_modules
    assert model.bn1 in frozen and model.fc not in frozen


def test_grayscale_model_takes_rgb_weights_by_summing_the_stem(resnet18_weights):
    folder, state = resnet18_weights
    cfg = model_cfg("model.name=resnet18", f"model.pretrained={folder / 'resnet18.pth'}")
    model, _ = prepare_model(cfg, (1, 128, 128), num_outputs=3)
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))


def test_wrong_architecture_names_the_first_mismatched_key(resnet18_weights, tmp_path):
    folder, state = resnet18_weights
    with pytest.raises(EdgekitError) as err:
        prepare_model(model_cfg("model.name=mobilenet_v2",
                                f"model.pretrained={folder / 'resnet18.pth'}"),
                      (3, 128, 128), num_outputs=2)
    assert str(err.value) == (f"model.pretrained: '{folder / 'resnet18.pth'}' does not fit "
                              "mobilenet_v2: first mismatched key 'features.0.0.weight' "
                              "(missing from the file)")
    # Right names, wrong shapes: resnet18's 7x7 stem into the 32 px CIFAR-style stem.
    with pytest.raises(EdgekitError, match=r"first mismatched key 'conv1.weight' \(file "
                                           r"\[64, 3, 7, 7\], model \[64, 3, 3, 3\]\)"):
        prepare_model(model_cfg("model.name=resnet18",
                                f"model.pretrained={folder / 'resnet18.pth'}"),
                      (3, 32, 32), num_outputs=2)
    extra = dict(state, **{"layer5.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(EdgekitError, match=r"first mismatched key 'layer5.weight' \(not in the "
                                           r"model\)"):
        prepare_model(model_cfg("model.name=resnet18",
                                f"model.pretrained={tmp_path / 'extra.pth'}"),
                      (3, 112, 112), num_outputs=2)


def test_weights_files_that_are_not_weights(tmp_path):
    def prepare(path):
        return prepare_model(model_cfg("model.name=resnet18", f"model.pretrained={path}"),
                             (3, 112, 112), num_outputs=2)

    with pytest.raises(EdgekitError, match=r"does not exist; download https://download.pytorch"
                                           r".org/models/resnet18-f37072fd.pth once"):
        prepare(tmp_path / "missing.pth")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(EdgekitError, match="expected a .safetensors or .pth/.pt file"):
        prepare(tmp_path / "w.onnx")
    (tmp_path / "torn.pth").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(EdgekitError, match="is not a weights file"):
        prepare(tmp_path / "torn.pth")

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(EdgekitError, match="is not a weights file: it holds Python objects, "
                                           r"not only tensors \(Unsupported global") as e:
        prepare(tmp_path / "evil.pth")  # weights_only: never runs what the file says
    assert "weights_only" not in str(e.value)  # nor passes on torch's advice to
    torch.save({"conv1.weight": [1, 2]}, tmp_path / "list.pth")
    with pytest.raises(EdgekitError, match="is not a state dict"):
        prepare(tmp_path / "list.pth")


def test_freeze_needs_pretrained_weights():
    with pytest.raises(EdgekitError, match="model.freeze needs model.pretrained"):
        load_recipe("lenet5", ["model.freeze=true"])
