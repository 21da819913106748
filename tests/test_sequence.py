"""Sequence and regression parts: tasks, recurrent models, generated data, the state hook."""

import numpy as np
import pytest
import torch

from edgekit.data import build_dataset
from edgekit.errors import EdgekitError
from edgekit.loop import fit, forward
from edgekit.models import build_model, model_options
from edgekit.recipe import DataConfig, load_recipe
from edgekit.runtime.preprocess.text import decode_text, text_spec, text_to_array
from edgekit.tasks import get_task


def test_regression_task_scores_mse_and_bounds_int8_in_r2_points():
    task = get_task("regression")
    y = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)  # variance 1.25
    ref, out = y + 0.1, y + 0.2
    assert task.score(ref, y) == pytest.approx(0.01, rel=1e-5)
    assert task.better(0.01, 0.02) and not task.higher_is_better
    # MSE 0.01 -> 0.04 is 0.03 / 1.25 of the variance: 2.4 R² points.
    assert task.drop_points(ref, out, y) == pytest.approx(2.4, rel=1e-5)
    # (B, 1) outputs against (B,) targets must not broadcast to (B, B).
    o, t = task.loss_view(torch.zeros(4, 1), torch.ones(4))
    assert o.shape == t.shape == (4,)


def test_sequence_tasks_decode_per_step():
    task = get_task("sequence_classification")
    scores = np.eye(4, dtype=np.float32)[[[3, 0, 2, 3, 2]]]  # (1, 5, 4)
    assert decode_text(task.decode(scores)[0], ["h", "e", "l", "o"]) == "ohlol"
    assert task.score(scores, np.array([[3, 0, 2, 3, 2]])) == 1.0
    wrong = scores.copy()
    wrong[0, 4] = np.eye(4)[1]
    assert task.score(wrong, np.array([[3, 0, 2, 3, 2]])) == pytest.approx(0.8)
    assert task.sequences_equal(wrong, scores) == 0.0 and task.sequences_equal(scores, scores) == 1
    assert task.drop_points(scores, wrong, np.array([[3, 0, 2, 3, 2]])) == pytest.approx(20)
    seq = get_task("sequence_regression")
    assert seq.score(np.zeros((2, 10, 1)), np.ones((2, 10, 1))) == 1.0


def test_text_encoding_one_hot_and_index_and_its_errors():
    spec = text_spec(["h", "e", "l", "o"], 5)
    x = text_to_array("hello", spec)
    assert x.dtype == np.float32 and x.shape == (5, 4) and x.argmax(1).tolist() == [0, 1, 2, 2, 3]
    ids = text_to_array("hello", text_spec(["h", "e", "l", "o"], 5, "index"))
    assert ids.dtype == np.int64 and ids.tolist() == [0, 1, 2, 2, 3]
    with pytest.raises(EdgekitError, match=r"character 'x' \(position 3 of 'hexlo'\) is not in "
                                           r"the model's vocabulary: 'helo'"):
        text_to_array("hexlo", spec)
    with pytest.raises(EdgekitError, match=r"takes exactly 5 characters; got 4 \('hell'\)"):
        text_to_array("hell", spec)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "rnncell"])
def test_recurrent_models_give_one_output_per_step(name):
    model = build_model(name, input_shape=(5, 4), num_outputs=4, hidden=6)
    assert model(torch.randn(3, 5, 4)).shape == (3, 5, 4)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_stateful_models_carry_their_state(name):
    """Two windows with the state carried equal one window twice as long."""
    torch.manual_seed(0)
    model = build_model(name, input_shape=(10, 1), num_outputs=1, hidden=8, layers=2,
                        stateful=True).eval()
    x = torch.randn(2, 20, 1)
    with torch.no_grad():
        whole, _ = model(x)
        a, state = model(x[:, :10])
        b, _ = model(x[:, 10:], state)
    assert state.shape == ((4 if name == "lstm" else 2), 2, 8)
    torch.testing.assert_close(torch.cat([a, b], 1), whole)


def test_embedding_model_takes_token_ids():
    data = build_dataset(DataConfig(name="chars", encoding="index"))
    r = load_recipe("hello-embed-rnn")
    model = build_model("rnn", input_shape=data.input_shape, num_outputs=4,
                        **model_options(r.model, data.preprocess))
    assert model.embedding.num_embeddings == 4 and model.embedding.embedding_dim == 10
    assert model.rnn.num_layers == 2 and model.rnn.hidden_size == 8
    assert model(torch.from_numpy(data.train.x)).shape == (1, 5, 4)


@pytest.mark.parametrize("name, options, message", [
    ("lenet5", {"hidden": 8}, "model.hidden does not apply to model 'lenet5'"),
    ("rnncell", {"stateful": True}, "model.stateful does not apply to model 'rnncell'"),
    ("rnn", {"embed": 4}, r"rnn with model.embed takes token ids \(T,\), got input shape "
                          r"\(5, 4\); set data.encoding=index"),
    ("linear", {}, r"linear takes a vector of features \(F,\), got input shape \(5, 4\)"),
    ("rnncell", {"dropout": 0.5}, "rnncell has no dropout"),
])
def test_models_reject_options_and_shapes_they_cannot_take(name, options, message):
    with pytest.raises(EdgekitError, match=message):
        build_model(name, input_shape=(5, 4), num_outputs=4, **options)


def test_chars_dataset_is_the_handbook_pair_and_checks_lengths():
    data = build_dataset(DataConfig(name="chars"))
    assert data.labels == ["h", "e", "l", "o"]
    assert decode_text(data.train.y[0], data.labels) == "ohlol"
    assert data.train.x.shape == (1, 5, 4) and data.task == "sequence_classification"
    with pytest.raises(EdgekitError, match="data.target must have one character per character"):
        build_dataset(DataConfig(name="chars", text="hihell", target="ihell"))


def test_line_and_spiral_are_seeded_and_shaped():
    a, b = build_dataset(DataConfig(name="line")), build_dataset(DataConfig(name="line"))
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert a.train.x.shape == (800, 1) and a.train.y.shape == (800, 1) and a.task == "regression"
    # The best line through the data is y = 5x + 7.125 (the noise's mean joins the intercept).
    x, y = np.concatenate([a.train.x, a.test.x])[:, 0], np.concatenate([a.train.y, a.test.y])[:, 0]
    w, c = np.polyfit(x, y, 1)
    assert abs(w - 5) < 0.02 and abs(c - 7.125) < 0.02
    s = build_dataset(DataConfig(name="spiral"))
    assert len(s.train) + len(s.test) == 3000 and np.bincount(s.train.y).tolist()[0] > 700


def test_sincos_windows_are_ordered_streams():
    data = build_dataset(DataConfig(name="sincos", batch_size=4, samples=2000))
    tr = data.train
    assert tr.stream == 4 and data.test.stream == 1 and tr.x.shape[1:] == (10, 1)
    # Row k*4 + s is window k of stream s: stream 0's windows 0 and 1 are contiguous in time.
    np.testing.assert_allclose(np.sin(np.arange(20) * 0.1), np.concatenate(
        [tr.x[0, :, 0], tr.x[4, :, 0]]), atol=1e-6)
    np.testing.assert_allclose(tr.y[0, :, 0], np.cos(np.arange(10) * 0.1), atol=1e-6)
    with pytest.raises(EdgekitError, match="shorter than 64 stream"):
        build_dataset(DataConfig(name="sincos", batch_size=64, samples=500))


def test_forward_detaches_the_state_it_carries():
    model = build_model("rnn", input_shape=(10, 1), num_outputs=1, hidden=4, stateful=True)
    out, state = forward(model, torch.randn(2, 10, 1))
    assert out.shape == (2, 10, 1) and not state.requires_grad
    plain = build_model("rnn", input_shape=(10, 1), num_outputs=1, hidden=4)
    out, state = forward(plain, torch.randn(2, 10, 1))
    assert state is None


def test_stateful_model_needs_stream_data():
    r = load_recipe("hello-rnn", ["model.stateful=true"])
    with pytest.raises(EdgekitError, match=r"model.stateful needs ordered windows of a series, "
                                           r"read by one process \(chars has none\)"):
        fit(r, build_dataset(r.data), progress=False)


@pytest.mark.parametrize("recipe", ["hello-rnn", "hello-rnncell", "hello-embed-rnn"])
def test_hello_recipes_learn_ohlol_in_a_second(recipe):
    r = load_recipe(recipe)
    data = build_dataset(r.data)
    result = fit(r, data, progress=False)
    model, history = result.model, result.history
    with torch.no_grad():
        out = model(torch.from_numpy(data.test.x)).numpy()
    assert decode_text(out.argmax(-1)[0], data.labels) == "ohlol"
    assert history[-1]["test_accuracy"] == 1.0
