"""The `edgekit` command: each subcommand parses its arguments and calls one library function.

Heavy imports (torch, onnx) happen inside the commands that need them, so `predict` and `bench`
on .onnx files run on a machine without torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.export.targets import TARGETS

# Modules that only the `train` extra installs: the base install is the Pi runtime.
TRAIN_EXTRA = {"torch", "torchvision", "onnx", "onnxscript", "sklearn", "tqdm", "matplotlib",
               "safetensors"}


class Group(click.Group):
    """Turns user-facing failures into one line on stderr and exit status 1.

    EdgekitError (bad input, failed check), OSError (a path that can't be written or read) and
    a missing training extra; anything else is a bug and keeps its traceback.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgekitError as e:
            fail(str(e))
        except OSError as e:
            fail(f"{e.strerror or e}: {e.filename!r}" if e.filename else str(e))
        except ImportError as e:
            if (e.name or "").partition(".")[0] not in TRAIN_EXTRA:
                raise
            fail(f"`edgekit {ctx.invoked_subcommand}` needs the training extra "
                 f"(pip install 'edgekit[train]'): no module named {e.name!r}")


def fail(message: str):
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
def main():
    """Train a model from a recipe, export it to ONNX/TorchScript (int8), run and bench it."""


@main.command("recipes")
def recipes_cmd():
    """List the bundled recipes."""
    from edgekit.recipe import list_recipes, load_recipe
    from edgekit.table import table

    rows = [("recipe", "model", "dataset", "description")]
    for name in list_recipes():
        r = load_recipe(name)
        rows.append((name, r.model.name, r.data.name, r.description))
    click.echo(table(rows))


@main.command("train")
@click.argument("recipe")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set train.epochs=5 (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run directory to create (default runs/RECIPE-TIMESTAMP).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def train_cmd(recipe, overrides, out, no_progress):
    """Train RECIPE (a bundled name or a .yaml path) and write a run directory."""
    import json

    from edgekit.recipe import load_recipe
    from edgekit.tasks import get_task
    from edgekit.train import train

    run = train(load_recipe(recipe, overrides), out, progress=not no_progress)
    m = json.loads((run / "metrics.json").read_text())
    task = get_task(m["task"])
    click.echo(f"run: {run}")
    click.echo(f"test {task.metric} {task.format(m['test_' + task.metric])} on "
               f"{m['test_samples']} held-out samples ({len(m['history'])} epochs, "
               f"{m['train_seconds']:.1f} s on {m['device']})")
    if "sample" in m:
        click.echo(f"held-out image: {run / m['sample']['file']} (label {m['sample']['label']})")


@main.command("export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--onnx", is_flag=True, help="Write model.onnx (fp32).")
@click.option("--torchscript", is_flag=True, help="Write model.ts (fp32, traced and frozen).")
@click.option("--int8", is_flag=True,
              help="Also write int8 of each format asked for: model.int8.onnx (onnxruntime) "
                   "and/or model.int8.ts (torch.ao).")
@click.option("--fp16", is_flag=True, help="Also write model.fp16.onnx (for GPU hosts).")
@click.option("--target", type=click.Choice(TARGETS), default="local", show_default=True,
              help="Where the model will run: local (this CPU: int8 layouts timed, the fastest "
                   "kept), x86, pi4, pi5 or arm64 (documented presets).")
@click.option("--int8-method", type=click.Choice(["auto", "static", "dynamic"]), default=None,
              help="static (calibrated) or dynamic int8; default: the recipe's "
                   "export.int8_method, auto (static for conv nets, dynamic for Linear/RNN).")
@click.option("--int8-exclude", "exclude", multiple=True, metavar="NAME",
              help="Keep layer NAME (a module name, e.g. classifier.7 or layer4) in fp32 in "
                   "the int8 artifacts; repeatable or comma-separated.")
@click.option("--allow-degraded", is_flag=True,
              help="Keep an artifact that fails its check, recorded as failed in the report "
                   "and manifest, instead of failing the export.")
@click.option("--max-int8-drop", type=click.FloatRange(min=0), default=None,
              help="Accuracy points int8 may lose (default: the recipe's export.max_int8_drop).")
@click.option("--tune-seconds", type=click.FloatRange(min=0), default=None,
              help="Timing budget per int8 candidate with --target local (default: the "
                   "recipe's export.tune_seconds; 0 keeps the first layout untimed).")
def export_cmd(run, onnx, torchscript, int8, fp16, target, int8_method, exclude,
               allow_degraded, max_int8_drop, tune_seconds):
    """Export RUN's model and verify every artifact against PyTorch.

    Only the formats asked for are rebuilt; other files in RUN/export are kept.
    """
    from edgekit.export import export, report_markdown

    if int8 and not (onnx or torchscript):
        raise EdgekitError("--int8 quantizes the ONNX and/or TorchScript model: add --onnx "
                           "and/or --torchscript")
    if fp16 and not onnx:
        raise EdgekitError("--fp16 converts the ONNX model: add --onnx")
    formats = [name for name, on in (
        ("onnx", onnx), ("onnx-int8", onnx and int8), ("onnx-fp16", fp16),
        ("torchscript", torchscript), ("torchscript-int8", torchscript and int8)) if on]
    names = tuple(n.strip() for item in exclude for n in item.split(",") if n.strip())
    report = export(run, formats, target=target, int8_method=int8_method, exclude=names,
                    allow_degraded=allow_degraded, max_int8_drop=max_int8_drop,
                    tune_seconds=tune_seconds)
    click.echo(report_markdown(report).rstrip())
    click.echo(f"artifacts: {run / 'export'}")


@main.command("predict")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("image", required=False, type=click.Path(path_type=Path))
@click.option("--sample", type=int, default=None,
              help="Use held-out sample N shipped with the export instead of an image.")
@click.option("-k", "--top", "k", type=click.IntRange(min=1), default=3, show_default=True,
              help="How many labels to show.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads.")
def predict_cmd(artifact, image, sample, k, threads):
    """Classify IMAGE (or --sample N) with ARTIFACT (.onnx or .ts) and print top-k labels."""
    from edgekit.runtime import predict

    title, top = predict(artifact, image, sample, k, threads)
    click.echo(f"{title} -> {artifact.name}")
    for rank, (name, p) in enumerate(top, 1):
        click.echo(f"  {rank}. {name:<12} {p:.4f}")


@main.command("bench")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--runs", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Intra-op threads (default: all cores).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="JSON report (default: bench.json beside the first artifact).")
def bench_cmd(artifacts, runs, warmup, threads, batch, out):
    """Measure p50/p90/p99 latency of ARTIFACTS on this machine."""
    from edgekit.bench import bench, format_table
    from edgekit.fileio import atomic_path, json_text

    out = out or artifacts[0].with_name("bench.json")
    if out.is_dir():  # checked before timing, so no measurement is lost
        raise EdgekitError(f"--out {str(out)!r} is a directory; expected a .json file path")
    with atomic_path(out) as tmp:  # claimed first: an unwritable --out fails before timing
        report = bench(list(artifacts), runs=runs, warmup=warmup, threads=threads, batch=batch)
        tmp.write_text(json_text(report), encoding="utf-8")
    click.echo(format_table(report))
    click.echo(f"wrote {out}")


@main.command("summary")
@click.argument("run", type=click.Path(path_type=Path))
def summary_cmd(run):
    """Print accuracy, size and latency of RUN's model and artifacts as one table."""
    from edgekit.summary import summarize

    click.echo(summarize(run))


if __name__ == "__main__":
    main()
