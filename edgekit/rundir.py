"""The files of a run directory, named once: `edgekit train` writes them, the rest reads them.

    RUN/recipe.yaml          the resolved recipe, every default filled in
    RUN/model.safetensors    the trained weights
    RUN/metrics.json         held-out metric, history, input contract (a finished run has it)
    RUN/checkpoint.pt        the last checkpoint (weights_only-loadable), for --resume
    RUN/train.log, curves.png, sample.png
    RUN/export/              what `edgekit export` publishes: manifest.json, report.json,
                             report.md, samples.npz, bench.json and the artifacts
"""

from __future__ import annotations

from pathlib import Path

RECIPE, WEIGHTS, METRICS = "recipe.yaml", "model.safetensors", "metrics.json"
CHECKPOINT, LOG, CURVES = "checkpoint.pt", "train.log", "curves.png"
EXPORT = "export"
MANIFEST, REPORT, REPORT_MD = "manifest.json", "report.json", "report.md"
SAMPLES, BENCH = "samples.npz", "bench.json"


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
        self.export = self.root / EXPORT
        self.report = self.export / REPORT
        self.bench = self.export / BENCH

    def finished(self) -> bool:
        """True when training wrote its result (metrics.json, last)."""
        return self.metrics.is_file()
