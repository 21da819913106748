"""What `export` asks of PyTorch's runtime before it loads: set early, the caller's value kept."""

import os

import pytest

from edgekit.errors import EdgekitError


def test_export_asks_for_huge_pages_before_torch_loads(tmp_path, monkeypatch):
    from edgekit.exporting import export
    from edgekit.exporting.prepare import HUGE_PAGES

    monkeypatch.delenv(HUGE_PAGES, raising=False)
    with pytest.raises(EdgekitError, match="does not exist"):
        export(tmp_path / "missing", ["onnx"])  # fails after setting it, before any work
    assert os.environ[HUGE_PAGES] == "1"
    monkeypatch.setenv(HUGE_PAGES, "0")  # the caller's choice stays
    with pytest.raises(EdgekitError):
        export(tmp_path / "missing", ["onnx"])
    assert os.environ[HUGE_PAGES] == "0"
