"""`predict DIR`'s decode pool: input order, bad inputs, bounded read-ahead (no timing)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fakerunner import FakeRunner

from edgekit.errors import EdgekitError
from edgekit.runtime.batch import decode_workers, predict_files


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
