"""Manifest contract, embedding, and that the runtime prepares images as training did."""

import hashlib
import json

import numpy as np
import pytest

from edgekit import manifest as mf
from edgekit.errors import EdgekitError
from edgekit.runtime import preprocess

SPEC = preprocess.image_spec("L", (32, 32), mean=[0.3], std=[0.3])


def make(**over):
    kw = dict(recipe="r", model="lenet5", task="classification", input_name="input",
              input_shape=[None, 1, 32, 32], preprocess=SPEC, labels=list(range(10)))
    kw.update(over)
    return mf.make_manifest(**kw)


def test_manifest_carries_the_contract():
    m = make()
    assert m["input"] == {"name": "input", "shape": [None, 1, 32, 32], "dtype": "float32"}
    assert m["labels"] == [str(i) for i in range(10)]
    assert m["edgekit_version"]
    assert json.loads(json.dumps(m)) == m


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("labels"), "missing labels"),
    (lambda m: m.update(format_version=99), "format_version 99 is not supported"),
    (lambda m: m.update(task="painting"), "task 'painting'"),
])
def test_invalid_manifest_is_named(change, message):
    m = make()
    change(m)
    with pytest.raises(EdgekitError, match=message):
        mf.validate(m, "x.onnx")


def test_manifest_json_must_be_json():
    with pytest.raises(EdgekitError, match="not valid JSON"):
        mf.from_json("{nope", "manifest.json")


def test_with_files_records_size_and_sha256(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"abc" * 1000)
    out = mf.with_files(make(), tmp_path, {"model.onnx": {"format": "onnx", "precision": "fp32"}})
    entry = out["artifacts"]["model.onnx"]
    assert entry["bytes"] == 3000
    assert entry["sha256"] == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_onnx_embedded_manifest_is_read_back_by_the_runtime(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from edgekit.exporting.formats.onnx import embed
    from edgekit.runtime import load

    # A 1x1 "model" that flattens (B, 1, 32, 32) to (B, 1024) and keeps the first 10 values.
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]),
         helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [helper.make_tensor(n, TensorProto.INT64, [1], [v])
         for n, v in (("starts", 0), ("ends", 10), ("axes", 1))],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 9
    embed(proto, make())
    onnx.save(proto, tmp_path / "m.onnx")
    runner = load(tmp_path / "m.onnx")
    assert runner.manifest == make()
    x = runner.example_input(batch=2)
    np.testing.assert_array_equal(runner.run(x), x.reshape(2, -1)[:, :10])
    top = runner.classify(x, k=3)
    assert len(top) == 2 and len(top[0]) == 3
    assert top[0][0][0] == str(int(np.argmax(x[0].reshape(-1)[:10])))


def test_softmax_and_topk():
    logits = np.array([[1.0, 3.0, 2.0], [1000.0, 0.0, -1000.0]], dtype=np.float32)
    probs = preprocess.softmax(logits)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-6)
    assert np.isfinite(probs).all()
    top = preprocess.topk(probs, ["a", "b", "c"], k=2)
    assert [name for name, _ in top[0]] == ["b", "c"]
    assert top[1][0][0] == "a" and top[1][0][1] == pytest.approx(1.0)


def test_png_on_disk_is_prepared_exactly_like_the_training_data(tmp_path):
    """The held-out image saved as a PNG goes through the runtime to the dataset's own array."""
    from edgekit.data import build_dataset
    from edgekit.recipe import DataConfig

    data = build_dataset(DataConfig(name="digits"))
    for i in (0, 7, 123):
        data.test.images[i].save(tmp_path / f"{i}.png")
        x = preprocess.image_to_array(preprocess.load_image(tmp_path / f"{i}.png"),
                                      data.preprocess)
        np.testing.assert_array_equal(x, data.test.x[i])


def test_rgb_image_becomes_chw(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (4, 2), (255, 0, 51))
    spec = preprocess.image_spec("RGB", (2, 4), mean=[0, 0, 0], std=[1, 1, 1])
    x = preprocess.image_to_array(img, spec)
    assert x.shape == (3, 2, 4)
    np.testing.assert_allclose(x[:, 0, 0], [1.0, 0.0, 0.2], atol=1e-6)


def test_not_an_image_is_one_clear_error(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not pixels")
    with pytest.raises(EdgekitError, match="is not an image"):
        preprocess.load_image(bad)
    with pytest.raises(EdgekitError, match="does not exist"):
        preprocess.load_image(tmp_path / "missing.png")
