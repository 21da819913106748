"""The set-up promise: a second `make test` / `make demo` does not reinstall."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="runs inside the project's own .venv (make test)")
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_installed_venv_is_up_to_date_for_make():
    # `make -q` exits 0 only if the target needs no work: nothing would be reinstalled.
    proc = subprocess.run(["make", "-q", "install"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, "make would reinstall .venv although pyproject.toml is unchanged"
