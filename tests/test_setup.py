"""The set-up promise: `make test` / `make demo` install once, and again only when needed."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(folder: Path, target: str) -> str:
    """What `make TARGET` would run, without running it."""
    # Under `make test` the outer make's variables would turn this into a sub-make.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", "--no-print-directory", "-n", target], cwd=folder, env=env,
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture
def project(tmp_path):
    """The Makefile and pyproject.toml in a scratch folder, with a stand-in .venv."""
    shutil.copy(ROOT / "Makefile", tmp_path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


@pytest.mark.parametrize("target", ["test", "demo"])
def test_fresh_machine_installs_first(project, target):
    lines = dry_run(project, target).splitlines()
    assert "-m venv .venv" in lines[0]
    install = next(i for i, line in enumerate(lines) if "pip install" in line)
    assert "-e '.[train,pte,dev]'" in lines[install]  # .pte is exported and tested too
    first_use = next(i for i, line in enumerate(lines) if "pytest" in line or "edgekit " in line)
    assert install < first_use


@pytest.mark.parametrize("target", ["test", "demo"])
def test_second_run_does_not_reinstall(project, target):
    venv_bin = project / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text("#!/bin/sh\n")
    (venv_bin / "python").chmod(0o755)
    stamp = project / ".venv" / ".installed-stamp"
    stamp.touch()
    commands = dry_run(project, target)
    assert "pip install" not in commands and "-m venv" not in commands
    # Changing the declared dependencies does reinstall.
    future = stamp.stat().st_mtime + 10
    os.utime(project / "pyproject.toml", (future, future))
    assert "pip install" in dry_run(project, target)
