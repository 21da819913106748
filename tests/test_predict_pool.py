"""`predict DIR`'s decode pool: input order, bad inputs, bounded read-ahead (no timing)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fakerunner import FakeRunner

from edgekit.errors import EdgekitError
from edgekit.runtime.batch import decode_workers, lanes_for, predict_files


def test_predict_files_keeps_input_order_with_many_decoders():
    files = [Path(f"{i}-x") for i in range(50)]
    runner = FakeRunner(delay=0.001)
    out = list(predict_files(runner, files, batch=8, workers=4))
    assert [r["label"] for r in out] == [str(i) for i in range(50)]
    assert [r["input"] for r in out] == [str(f) for f in files]
    assert runner.batches == [8] * 6 + [2]


def test_predict_files_skips_bad_inputs_in_place_or_stops_at_the_first():
    files = [Path("0-x"), Path("1-bad"), Path("2-x")]
    out = list(predict_files(FakeRunner(), files, batch=2, skip_bad=True, workers=2))
    assert [r.get("label") or r["error"] for r in out] == ["0", "1-bad is bad", "2"]
    with pytest.raises(EdgekitError, match="1-bad is bad"):
        list(predict_files(FakeRunner(), files, batch=2, workers=2))


def test_predict_files_decodes_a_bounded_number_of_inputs_ahead():
    runner = FakeRunner()
    results = predict_files(runner, [Path(f"{i}-x") for i in range(1000)], batch=4, workers=2)
    next(results)  # the first batch ran; the decoders may be at most 3 batches ahead
    time.sleep(0.2)
    assert runner.prepared <= 4 * 4
    results.close()  # a consumer that stops early cancels what has not started
    assert runner.prepared <= 4 * 4


def test_decode_workers_take_the_cores_the_model_leaves(monkeypatch):
    monkeypatch.setattr("edgekit.machine.usable_cores", lambda: 4)
    assert [decode_workers(t) for t in (None, 4, 2, 1, 8)] == [1, 1, 3, 4, 1]


def test_lanes_keep_input_order_bad_inputs_and_a_bounded_read_ahead():
    files = [Path(f"{i}-x") for i in range(50)]
    runner = FakeRunner(delay=0.001)
    out = list(predict_files(runner, files, batch=8, lanes=3))
    assert [r["input"] for r in out] == [str(f) for f in files]
    assert [r["label"] for r in out] == [str(i) for i in range(50)]
    assert sorted(runner.batches) == [2] + [8] * 6
    bad = [Path("0-x"), Path("1-bad"), Path("2-x")]
    out = list(predict_files(FakeRunner(), bad, batch=2, skip_bad=True, lanes=2))
    assert [r.get("label") or r["error"] for r in out] == ["0", "1-bad is bad", "2"]
    with pytest.raises(EdgekitError, match="1-bad is bad"):
        list(predict_files(FakeRunner(), bad, batch=2, lanes=2))
    runner = FakeRunner()
    results = predict_files(runner, [Path(f"{i}-x") for i in range(1000)], batch=4, lanes=2)
    next(results)  # at most one batch per lane beyond the one being yielded
    time.sleep(0.2)
    assert runner.prepared <= 4 * 3
    results.close()
    assert runner.prepared <= 4 * 3


def test_lanes_only_where_the_backend_takes_concurrent_calls(monkeypatch):
    monkeypatch.setattr("edgekit.machine.usable_cores", lambda: 4)
    assert lanes_for("m.onnx", None) == (1, 4)
    assert lanes_for("m.int8.onnx", 2) == (2, 2)
    assert lanes_for("m.onnx", 3) == (3, 1)
    assert lanes_for("m.onnx", None, "cuda") == (None, 1)
    assert lanes_for("m.pte", None) == (None, 1) and lanes_for("m.ts", 2) == (2, 1)
