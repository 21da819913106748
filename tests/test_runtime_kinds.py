"""The runtime side of sequence, regression and tabular models: kinds, results, carried state."""

import numpy as np
import pytest

from edgekit import manifest as mf
from edgekit.errors import EdgekitError
from edgekit.runtime import Runner
from edgekit.runtime.preprocess import KINDS, get_kind
from edgekit.runtime.preprocess.text import text_spec
from edgekit.tasks import get_task

TEXT = text_spec(["h", "e", "l", "o"], 5)
TABULAR = {"kind": "tabular", "columns": [
    {"name": "age", "type": "numeric", "mean": 40.0, "std": 10.0},
    {"name": "sex", "type": "category", "values": ["Female", "Male"], "mean": 0.5, "std": 0.5}]}
ARRAY = {"kind": "array", "shape": [10, 1]}


def manifest(task="sequence_classification", pre=TEXT, labels=("h", "e", "l", "o"),
             shape=(None, 5, 4), **extra) -> dict:
    return mf.make_manifest(recipe="r", model="m", task=task, input_name="input",
                            input_shape=list(shape), preprocess=pre, labels=list(labels), **extra)


def test_the_new_kinds_are_registered_and_validated():
    assert {"image", "text", "tabular", "array"} <= set(KINDS.names())
    with pytest.raises(EdgekitError, match=r"vocab must be a list of distinct single characters"):
        manifest(pre={**TEXT, "vocab": ["he", "l"]})
    with pytest.raises(EdgekitError, match=r"manifest preprocess \(tabular\) is missing columns"):
        manifest(task="classification", pre={"kind": "tabular"}, labels=["a", "b"])
    with pytest.raises(EdgekitError, match=r"column 1 must give name, type"):
        manifest(task="classification", labels=["a", "b"], pre={"kind": "tabular", "columns": [
            TABULAR["columns"][0], {"name": "sex", "type": "category", "mean": 0, "std": 1}]})
    with pytest.raises(EdgekitError, match=r"\(array\) shape must be a list of positive integers"):
        manifest(task="regression", pre={"kind": "array", "shape": [0]}, labels=["y"])


def test_manifest_takes_token_ids_and_a_state_and_checks_the_state():
    m = manifest(pre={**TEXT, "encoding": "index"}, shape=(None, 5), input_dtype="int64")
    assert m["input"]["dtype"] == "int64"
    m = manifest(task="sequence_regression", pre=ARRAY, labels=["cos"], shape=(None, 10, 1),
                 state={"input": "state", "output": "state_out", "shape": [1, None, 16]})
    assert m["state"]["shape"] == [1, None, 16]
    with pytest.raises(EdgekitError, match=r"manifest state must give input, output and shape "
                                           r"\[layers, null, hidden\]"):
        manifest(task="sequence_regression", pre=ARRAY, labels=["cos"], shape=(None, 10, 1),
                 state={"input": "state", "output": "state_out", "shape": [1, 2, 16]})


def test_kinds_prepare_raw_input(tmp_path):
    assert get_kind(TEXT).prepare("hello", TEXT).shape == (5, 4)
    assert get_kind(TEXT).prepare(b"hello\n", TEXT, "text/plain").argmax(1).tolist() == [
        0, 1, 2, 2, 3]
    (tmp_path / "row.json").write_text('{"age": 50, "sex": "Male"}')
    np.testing.assert_allclose(get_kind(TABULAR).prepare(tmp_path / "row.json", TABULAR), [1, 1])
    (tmp_path / "row.csv").write_text("age,sex\n30,Female\n")
    np.testing.assert_allclose(get_kind(TABULAR).prepare(tmp_path / "row.csv", TABULAR), [-1, -1])
    (tmp_path / "two.csv").write_text("age,sex\n30,Female\n31,Male\n")
    with pytest.raises(EdgekitError, match="holds more than 1 row"):
        get_kind(TABULAR).prepare(tmp_path / "two.csv", TABULAR)
    np.save(tmp_path / "w.npy", np.ones((10, 1)))
    assert get_kind(ARRAY).prepare(tmp_path / "w.npy", ARRAY).shape == (10, 1)
    assert get_kind(ARRAY).prepare(b"[[1],[2],[3],[4],[5],[6],[7],[8],[9],[10]]", ARRAY,
                                   "application/json")[9, 0] == 10
    (tmp_path / "obj.npy").write_bytes(b"not numpy")
    with pytest.raises(EdgekitError, match="is not a .npy array"):
        get_kind(ARRAY).prepare(tmp_path / "obj.npy", ARRAY)


def test_task_results_are_json_and_read_as_one_line():
    seq = get_task("sequence_classification")
    scores = np.eye(4, dtype=np.float32)[[[3, 0, 2, 3, 2]]] * 5  # (1, 5, 4)
    [r] = seq.results(scores, manifest())
    assert r["text"] == "ohlol" and r["labels"] == list("ohlol") and seq.line(r) == "ohlol"
    assert all(0.9 < p < 1 for p in r["probabilities"])
    reg = get_task("regression")
    [r] = reg.results(np.array([[7.125]], np.float32), {"labels": ["y"]})
    assert r == {"values": [7.125], "labels": ["y"]} and reg.line(r) == "y = 7.125"
    [r] = get_task("sequence_regression").results(np.zeros((1, 3, 1)), {"labels": ["cos"]})
    assert r["values"] == [[0.0], [0.0], [0.0]]
    with pytest.raises(EdgekitError, match="has 2 outputs but its manifest names 1"):
        reg.check_output([None, 2], {"labels": ["y"]}, "m.onnx")


class Accumulator(Runner):
    """A stand-in backend whose state is the running sum of its inputs: (L=1, B, H=1)."""

    backend = "test"

    def __init__(self, m: dict):
        super().__init__(__import__("pathlib").Path("acc.onnx"), m)
        self.input_name, self.input_shape = "input", m["input"]["shape"]
        self.input_dtype, self.output_shape = "float32", [None, 10, 1]
        self._ready()

    def _run_state(self, x, state):
        total = state[0, :, 0][:, None] + np.cumsum(x[:, :, 0], 1)  # (B, T)
        return total[:, :, None].astype(np.float32), total[None, :, -1:].astype(np.float32)


def test_runner_carries_the_state_between_calls_and_resets():
    m = manifest(task="sequence_regression", pre=ARRAY, labels=["y"], shape=(None, 10, 1),
                 state={"input": "state", "output": "state_out", "shape": [1, None, 1]})
    runner = Accumulator(m)
    ones = np.ones((1, 10, 1), np.float32)
    assert runner.stateful and runner.run(ones)[0, -1, 0] == 10
    assert runner.run(ones)[0, -1, 0] == 20  # carried from the first window
    assert runner.run(np.ones((2, 10, 1)))[:, -1, 0].tolist() == [10, 10]  # new batch: new
    runner.reset()
    assert runner.run(ones)[0, -1, 0] == 10
