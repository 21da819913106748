"""Which files `edgekit bench RUN` times: every verified artifact of the run's export."""

import json

import pytest

from edgekit.benchmark import sweep
from edgekit.errors import EdgekitError


@pytest.fixture
def run(tmp_path):
    """A run directory whose report says model.int8.onnx failed its check."""
    export = tmp_path / "run" / "export"
    export.mkdir(parents=True)
    rows = [{"file": "model.onnx", "passed": True}, {"file": "model.int8.onnx", "passed": False},
            {"file": "model.ts", "passed": True}, {"file": "model.int8.ts", "passed": True}]
    (export / "report.json").write_text(json.dumps({"artifacts": rows}))
    for row in rows[:3]:  # model.int8.ts is listed but not on disk
        (export / row["file"]).write_bytes(b"x")
    return tmp_path / "run"


def test_a_run_stands_for_its_verified_artifacts(run):
    files, skipped = sweep.expand([run])
    assert files == [run / "export" / "model.onnx", run / "export" / "model.ts"]
    assert skipped == [f"{run / 'export' / 'model.int8.onnx'}: failed its export check",
                       f"{run / 'export' / 'model.int8.ts'}: listed in report.json but missing"]
    assert sweep.expand([run / "export"])[0] == files  # the export folder itself works too


def test_each_file_once_in_the_order_given(run):
    onnx = run / "export" / "model.onnx"
    files, _ = sweep.expand([run / "export" / ".." / "export" / "model.ts", run, onnx])
    assert [f.name for f in files] == ["model.ts", "model.onnx"]


def test_torchscript_is_left_out_where_torch_is_missing(run, monkeypatch):
    from edgekit import formats

    real = formats.importlib.util.find_spec
    monkeypatch.setattr(formats.importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    files, skipped = sweep.expand([run])
    assert files == [run / "export" / "model.onnx"]
    assert f"{run / 'export' / 'model.ts'}: TorchScript needs torch, which is not installed" \
        in skipped


def test_directories_that_are_not_runs(tmp_path, run):
    with pytest.raises(EdgekitError, match="is a directory but not a run or export directory"):
        sweep.expand([tmp_path])
    (run / "export" / "report.json").write_text("{not json")
    with pytest.raises(EdgekitError, match="report.json' is damaged; re-run `edgekit export`"):
        sweep.expand([run])


def test_bad_settings_are_refused_before_anything_loads(run):
    with pytest.raises(EdgekitError, match=r"threads: expected positive whole numbers, got \[0"):
        sweep.bench([run], threads=[0, 2])
    with pytest.raises(EdgekitError, match="batch: expected positive whole numbers"):
        sweep.bench([run], batch=True)
    with pytest.raises(EdgekitError, match="seconds: expected a value > 0"):
        sweep.bench([run], seconds=0)
