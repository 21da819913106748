"""The files of a run directory, named once (`edgekit train` writes them, the rest reads them).

    RUN/recipe.yaml          the resolved recipe, every default filled in
    RUN/model.safetensors    the trained weights
    RUN/metrics.json         held-out metric, history, input contract (a finished run has it)
    RUN/checkpoint.pt        the last checkpoint (weights_only-loadable), for --resume
    RUN/train.log, curves.png, sample.png
    RUN/export/              what `edgekit export` publishes: manifest.json, report.json,
                             report.md, samples.npz, bench.json and the artifacts
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory (nothing is read or created by building one)."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    recipe = property(lambda self: self.root / "recipe.yaml")
    weights = property(lambda self: self.root / "model.safetensors")
    metrics = property(lambda self: self.root / "metrics.json")
    checkpoint = property(lambda self: self.root / "checkpoint.pt")
    log = property(lambda self: self.root / "train.log")
    curves = property(lambda self: self.root / "curves.png")
    sample = property(lambda self: self.root / "sample.png")
    export = property(lambda self: self.root / "export")
    manifest = property(lambda self: self.export / "manifest.json")
    report = property(lambda self: self.export / "report.json")
    report_md = property(lambda self: self.export / "report.md")
    samples = property(lambda self: self.export / "samples.npz")
    bench = property(lambda self: self.export / "bench.json")

    def finished(self) -> bool:
        """True when training wrote its result (metrics.json and the weights)."""
        return self.metrics.is_file() and self.weights.is_file()
