"""What `export` asks of PyTorch's runtime before it loads: set early, the caller's value kept."""

import os

import pytest

from edgekit.errors import EdgekitError


def test_export_asks_for_huge_pages_and_sleeping_openmp_threads(tmp_path, monkeypatch):
    from edgekit.exporting import export
    from edgekit.exporting.prepare import HUGE_PAGES, OPENMP_WAIT

    monkeypatch.delenv(HUGE_PAGES, raising=False)
    monkeypatch.delenv(OPENMP_WAIT, raising=False)
    with pytest.raises(EdgekitError, match="does not exist"):
        export(tmp_path / "missing", ["onnx"])  # fails after setting them, before any work
    assert os.environ[HUGE_PAGES] == "1" and os.environ[OPENMP_WAIT] == "PASSIVE"
    monkeypatch.setenv(HUGE_PAGES, "0")  # the caller's choice stays
    monkeypatch.setenv(OPENMP_WAIT, "ACTIVE")
    with pytest.raises(EdgekitError):
        export(tmp_path / "missing", ["onnx"])
    assert os.environ[HUGE_PAGES] == "0" and os.environ[OPENMP_WAIT] == "ACTIVE"
