"""The runs `edgekit train` leaves under runs/: which are finished, and the latest of them.

A run is finished once it holds its recipe.yaml, weights and metrics.json (written last); a
run stopped mid-training holds a checkpoint instead and is not exported until resumed.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.checkpoint import CHECKPOINT
from edgekit.errors import EdgekitError
from edgekit.train import WEIGHTS

ROOT = Path("runs")  # where `edgekit train` puts runs by default (relative to the cwd)
FINISHED = ("recipe.yaml", WEIGHTS, "metrics.json")


def finished(run: Path) -> bool:
    """Whether `run` is a run directory that finished training."""
    return all((run / f).is_file() for f in FINISHED)


def latest_run(root: str | Path = ROOT) -> Path:
    """The most recently finished run under `root` (by when its metrics.json was written).

    Raises:
        EdgekitError: no finished run there, saying how to train one (or resume one).
    """
    root = Path(root)
    runs = [p for p in root.iterdir() if p.is_dir() and finished(p)] if root.is_dir() else []
    if runs:
        return max(runs, key=lambda p: ((p / "metrics.json").stat().st_mtime, p.name))
    unfinished = sorted(p for p in root.iterdir() if (p / CHECKPOINT).is_file()) \
        if root.is_dir() else []
    resume = (f" or continue the unfinished {str(unfinished[-1])!r} with `edgekit train "
              f"--resume {unfinished[-1]}`" if unfinished else "")
    raise EdgekitError(f"no finished run under {str(root)!r} to export; train one with "
                       f"`edgekit train RECIPE` (see `edgekit recipes`){resume}, or give RUN")
