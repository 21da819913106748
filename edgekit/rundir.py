"""The files of a run directory, named once: `edgekit train` writes them, the rest reads them.

    RUN/recipe.yaml          the resolved recipe, every default filled in
    RUN/model.safetensors    the trained weights
    RUN/metrics.json         held-out metric, history, input contract (a finished run has it)
    RUN/checkpoint.pt        the last checkpoint (weights_only-loadable), for --resume
    RUN/train.log, curves.png, sample.png
    RUN/source/              what `edgekit import` keeps of a model edgekit did not train: the
                             user's .py file, a .pt2, or the ONNX file (then no weights file)
    RUN/export/              what `edgekit export` publishes: report.json, report.md,
                             bench.json, and what it ships to the device (edgekit.manifest:
                             manifest.json, samples.npz, the artifacts)
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError

RECIPE, WEIGHTS, METRICS = "recipe.yaml", "model.safetensors", "metrics.json"
CHECKPOINT, LOG, CURVES = "checkpoint.pt", "train.log", "curves.png"
EXPORT = "export"
ROOT = Path("runs")  # where `edgekit train` puts runs by default (relative to the cwd)
REPORT, REPORT_MD, BENCH = "report.json", "report.md", "bench.json"
SOURCE = "source"
ONNX_SOURCE = f"{SOURCE}/model.onnx"


class RunDir:
    """Paths inside one run directory (building one reads and creates nothing)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.recipe = self.root / RECIPE
        self.weights = self.root / WEIGHTS
        self.metrics = self.root / METRICS
        self.checkpoint = self.root / CHECKPOINT
        self.log = self.root / LOG
        self.curves = self.root / CURVES
        self.source = self.root / SOURCE
        self.onnx_source = self.root / ONNX_SOURCE
        self.export = self.root / EXPORT
        self.report = self.export / REPORT
        self.bench = self.export / BENCH

    def finished(self) -> bool:
        """True when training (or `edgekit import`) wrote its result: the recipe, the weights
        (or an imported ONNX file) and metrics.json (last). A run stopped mid-training holds a
        checkpoint instead."""
        return self.recipe.is_file() and self.metrics.is_file() and (
            self.weights.is_file() or self.onnx_source.is_file())


def latest_run(root: str | Path = ROOT) -> Path:
    """The most recently finished run under `root` (by when its metrics.json was written).

    Raises:
        EdgekitError: no finished run there, saying how to train one (or resume one).
    """
    root = Path(root)
    runs = [p for p in root.iterdir() if p.is_dir() and RunDir(p).finished()] \
        if root.is_dir() else []
    if runs:
        return max(runs, key=lambda p: (RunDir(p).metrics.stat().st_mtime, p.name))
    unfinished = sorted(p for p in root.iterdir() if RunDir(p).checkpoint.is_file()) \
        if root.is_dir() else []
    resume = (f" or continue the unfinished {str(unfinished[-1])!r} with `edgekit train "
              f"--resume {unfinished[-1]}`" if unfinished else "")
    raise EdgekitError(f"no finished run under {str(root)!r} to export; train one with "
                       f"`edgekit train RECIPE` (see `edgekit recipes`){resume}, or give RUN")
