"""edgekit's Python API: the functions the `edgekit` command calls, for your own scripts.

    import edgekit

    run = edgekit.import_model("my_net.py:Net", "runs/mine", weights="w.safetensors",
                               data="photos/", mode="L", image_size=32)
    exp = edgekit.export(run, onnx=True, pte=True, int8=True)
    print(exp.chosen, exp.passed)            # what was published, and every check's verdict
    runner = edgekit.load(exp.path / "model.int8.onnx")
    print(runner.predict("photos/3/x.png"))   # predict_batch([...]) for several

Both doors give a `Run`: `edgekit.train("lenet5")` (a recipe) and `edgekit.import_model(...)`
(a model edgekit did not train). Everything heavy is imported inside the functions, so
`import edgekit` stays fast and torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.rundir import RunDir


@dataclass
class Run:
    """A run directory (trained or imported) and what its metrics.json says."""

    path: Path
    metrics: dict = field(repr=False)

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """The finished run at `path`. Raises EdgekitError if it is not one."""
        path = Path(path)
        if not RunDir(path).finished():
            raise EdgekitError(f"{str(path)!r} is not a finished run directory (edgekit train "
                               "or edgekit import writes one)")
        return cls(path, json.loads(RunDir(path).metrics.read_text(encoding="utf-8")))

    @property
    def task(self) -> str:
        return self.metrics["task"]

    @property
    def metric(self) -> str:
        return self.metrics["metric"]

    @property
    def score(self) -> float:
        """The held-out metric of the fp32 model (for unlabeled data: agreement with itself)."""
        return self.metrics[f"test_{self.metric}"]

    @property
    def labels(self) -> list[str]:
        return self.metrics["labels"]

    @property
    def source_kind(self) -> str:
        """"recipe" for a trained run, else how it was imported: python, hub, pt2, onnx."""
        return self.metrics.get("source", {}).get("kind", "recipe")

    def summary_line(self) -> str:
        from edgekit.tasks import get_task

        task = get_task(self.task)
        m = self.metrics
        shape = "x".join(map(str, m["input_shape"]))
        if not m.get("labeled", True) or self.task == "raw":
            checked = "unlabeled: int8 will be checked by agreement with fp32"
        else:
            checked = f"fp32 {task.metric} {task.format(self.score)}"
        outputs = (", ".join(f"{o['name']} {o['shape']}" for o in m["outputs"])
                   if m.get("outputs") else f"{len(self.labels)} classes")
        return (f"run: {self.path} ({m['model']}, input {shape}, {outputs}; "
                f"{m['test_samples']} held-out of {m['test_samples'] + m['train_samples']} "
                f"inputs, {checked})")


@dataclass
class Export:
    """What `export` published: RUN/export and its report."""

    path: Path
    report: dict = field(repr=False)

    @property
    def artifacts(self) -> dict[str, Path]:
        """Published file name -> path, in catalog order."""
        return {a["file"]: self.path / a["file"] for a in self.report["artifacts"]}

    @property
    def passed(self) -> dict[str, bool]:
        """Each published artifact's check (parity, accuracy or agreement within the gate)."""
        return {a["file"]: a["passed"] for a in self.report["artifacts"]}

    @property
    def chosen(self) -> str | None:
        """The fastest artifact that passed, where export timed them on this machine."""
        fastest = self.report.get("fastest")
        return fastest.get("file") if isinstance(fastest, dict) else fastest

    @property
    def rows(self) -> list[dict]:
        """The report's rows: file, format, precision, score, drop, size, latency, why."""
        return self.report["artifacts"]

    def markdown(self) -> str:
        from edgekit.exporting import report_markdown

        return report_markdown(self.report)


def import_model(source, out: str | Path, *, weights=None, data=None, labels=None,
                 input_shape=None, mode: str | None = None, resize: int = 0,
                 image_size: int = 0, normalize: str = "none", task: str | None = None) -> Run:
    """Make a run directory of a model edgekit did not train (see edgekit.importer).

    Args:
        source: "my_net.py:Net", "package.module:NAME", "torchvision:NAME", "timm:NAME", a
            .pt2 or .onnx path, or an nn.Module whose class imports by name.
        out: the run directory to create.
        weights: a state dict file (.safetensors, .pt/.pth read with weights_only=True).
        data: a folder of class folders, or of unlabeled images.
        labels: class names (list, "a,b,c" or a file with one per line).
        input_shape: "3x224x224" or (3, 224, 224), one input without the batch.
        mode, resize, image_size, normalize: image preprocessing as in your training
            (normalize: "imagenet", "none" or "M,M,M/S,S,S").
        task: "classification" or "raw" (named output arrays); default from the outputs.

    Returns:
        The Run, ready for `export`.

    Raises:
        EdgekitError: one line naming what does not fit.
    """
    from edgekit.importer import Inputs
    from edgekit.importer import import_model as write_run

    inputs = Inputs(parse_shape(input_shape), mode, resize, image_size, normalize)
    return Run.open(write_run(source, out, weights=weights, data=data, labels=labels,
                              inputs=inputs, task=task))


def parse_shape(shape) -> tuple[int, ...] | None:
    """"3x224x224" (or a sequence of ints) -> (3, 224, 224); None stays None."""
    if shape is None or isinstance(shape, (tuple, list)):
        dims = shape
    else:
        dims = str(shape).lower().replace(",", "x").split("x")
    try:
        out = None if dims is None else tuple(int(d) for d in dims)
    except ValueError:
        out = ()
    if out is not None and (not out or any(d <= 0 for d in out)):
        raise EdgekitError(f"--input-shape {shape!r}: expected positive sizes like 3x224x224")
    return out


def train(recipe: str, out: str | Path | None = None, overrides: tuple[str, ...] = (),
          progress: bool = False) -> Run:
    """Train a bundled recipe (or a .yaml path) with `--set`-style overrides; the Run."""
    from edgekit import training
    from edgekit.recipe import load_recipe

    run = training.train(load_recipe(recipe, list(overrides)), out, progress=progress)
    if run is None:
        raise EdgekitError("this torchrun process is not rank 0: rank 0 holds the run")
    return Run.open(run)


def export(run: Run | str | Path, *, target: str = "local", **options) -> Export:
    """Export a run's model and check every artifact (edgekit.exporting.export).

    Args:
        target: "local" (this CPU: int8 layouts timed, the fastest kept), x86, pi4, pi5, arm64.
        options: the formats, one keyword per family and precision of the format catalog
            (onnx=True, torchscript=True, pte=True; int8=True, fp16=True: also those
            precisions of each), then int8_method, exclude, allow_degraded, max_int8_drop,
            tune_seconds, int8_fallback, keep_candidates (edgekit.exporting.prepare.Options).

    Raises:
        EdgekitError: nothing asked for, a format the source cannot take, or a failed check.
    """
    from edgekit import formats as catalog
    from edgekit.exporting import export as run_export

    path = run.path if isinstance(run, Run) else Path(run)
    flags = {k: bool(options.pop(k, False)) for k in (*catalog.families(),
                                                       *catalog.precisions())}
    names = catalog.select([f for f in catalog.families() if flags[f]],
                           [p for p in catalog.precisions() if flags[p]])
    report = run_export(path, names, target=target, **options)
    return Export(RunDir(path).export, report)


def load(path: str | Path | Export, threads: int | None = None, **options):
    """The runtime's Runner for an artifact (edgekit.runtime.load), or for a tuned export
    directory: the file and thread count its tuned.json chose (edgekit.tuned.resolve; `threads`
    overrides the tuned count), as `edgekit predict EXPORT_DIR` runs it."""
    from edgekit.runtime import load as runtime_load
    from edgekit.tuned import resolve

    artifact, threads, _ = resolve(path.path if isinstance(path, Export) else Path(path), threads)
    return runtime_load(artifact, threads=threads, **options)


def tune(export_dir: str | Path | Export, threads: list[int] | None = None,
         seconds: float = 2.0) -> dict:
    """Check and time an export's shipped files on this machine; writes tuned.json."""
    from edgekit.tuning import tune as run_tune

    path = export_dir.path if isinstance(export_dir, Export) else Path(export_dir)
    return run_tune(path, threads, seconds)


def bench(paths, **options) -> dict:
    """Latency of artifacts or run directories on this machine (edgekit.benchmark.bench)."""
    from edgekit.benchmark import bench as run_bench

    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    return run_bench([Path(p) for p in items], **options)
