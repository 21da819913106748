"""Shared fixtures: a real trained + exported run made once per session through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# No per-example deadline: on a loaded machine (or a Pi) one slow example is not a failure.
settings.register_profile("edgekit", deadline=None)
settings.load_profile("edgekit")


def edgekit(*args, check: bool = True, env: dict | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (`python -m edgekit ...`)."""
    proc = subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"edgekit {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """lenet5 trained for 2 epochs and exported to all three artifacts, through the CLI."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    edgekit("train", "lenet5", "--set", "train.epochs=2", "--out", run, "--no-progress")
    # Two epochs leave the model under-trained, so int8 may drift more than the default.
    edgekit("export", run, "--onnx", "--torchscript", "--int8", "--max-int8-drop", "5")
    return run


@pytest.fixture(scope="session")
def uci_files(tmp_path_factory) -> dict[str, Path]:
    """dataset name -> a small file in its UCI download's exact format (tests/uci_files.py)."""
    from uci_files import write_all

    return write_all(tmp_path_factory.mktemp("uci"))
