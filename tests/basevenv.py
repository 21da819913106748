"""A fresh venv holding only the base install (`pip install .`, no extras): the Pi runtime.

Shared by tests/test_base_install.py and benchmarks/test_device_runtime.py (cold start).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def base_venv(root: Path, compile: bool = True) -> Path:
    """`pip install .` of a copy of this checkout into a new venv under `root`.

    The copy keeps the build from writing into the checkout; this pip installs into the venv
    (no ensurepip). compile=False skips writing .pyc files (a faster install, slower first
    imports: a cold-start measurement wants them compiled).

    Returns:
        The venv's python.

    Raises:
        AssertionError: pip failed (with the end of its stderr).
    """
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src)
    for name in ("edgekit", "recipes"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root / "venv"], check=True)
    python = root / "venv" / "bin" / "python"
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install",
                           "--quiet", "--disable-pip-version-check", src]
                          + ([] if compile else ["--no-compile"]),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return python
