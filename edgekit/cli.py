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
    import warnings

    from edgekit.errors import EdgekitWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, EdgekitWarning):  # input that runs but may mislead: one line
            click.echo(f"warning: {' '.join(str(message).split())}", err=True)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    # The runtime's quick NaN/inf test sums +inf and -inf to NaN, and numpy says so; the
    # EdgekitWarning that follows is the one line the user needs.
    warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning,
                            r"edgekit\.runtime")


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
    from edgekit.train import train

    run = train(load_recipe(recipe, overrides), out, progress=not no_progress)
    m = json.loads((run / "metrics.json").read_text())
    click.echo(f"run: {run}")
    click.echo(f"test accuracy {m['test_accuracy']:.2%} on {m['test_samples']} held-out samples "
               f"({len(m['history'])} epochs, {m['train_seconds']:.1f} s on {m['device']})")
    if "sample" in m:
        click.echo(f"held-out image: {run / m['sample']['file']} (label {m['sample']['label']})")


@main.command("export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--onnx", is_flag=True, help="Write model.onnx (fp32).")
@click.option("--torchscript", is_flag=True, help="Write model.ts (fp32, traced and frozen).")
@click.option("--int8", is_flag=True, help="Write model.int8.onnx (static QDQ, calibrated).")
@click.option("--max-int8-drop", type=click.FloatRange(min=0), default=None,
              help="Accuracy points int8 may lose (default: the recipe's export.max_int8_drop).")
def export_cmd(run, onnx, torchscript, int8, max_int8_drop):
    """Export RUN's model and verify every artifact against PyTorch."""
    from edgekit.export import export, report_markdown

    if int8 and not onnx:
        raise EdgekitError("--int8 quantizes the ONNX model: add --onnx")
    formats = [name for name, on in (("onnx", onnx), ("onnx-int8", int8),
                                      ("torchscript", torchscript)) if on]
    report = export(run, formats, max_int8_drop=max_int8_drop)
    click.echo(report_markdown(report).rstrip())
    click.echo(f"artifacts: {run / 'export'}")


@main.command("predict")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--sample", type=int, default=None,
              help="Use held-out sample N shipped with the export instead of INPUTS.")
@click.option("-k", "--top", "k", type=click.IntRange(min=1), default=3, show_default=True,
              help="How many labels to show.")
@click.option("--batch", type=click.IntRange(min=1, max=4096), default=32, show_default=True,
              help="Inputs per inference when predicting many.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per input (JSON Lines) on stdout.")
@click.option("--skip-bad", is_flag=True,
              help="Report an unreadable input (an error entry) and go on, instead of stopping.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--no-verify", is_flag=True,
              help="Load the artifact even if its sha256 differs from manifest.json's.")
def predict_cmd(artifact, inputs, sample, k, batch, as_json, skip_bad, threads, device,
                no_verify):
    """Predict INPUTS (files or folders of images) or --sample N with ARTIFACT (.onnx or .ts).

    Folders are searched recursively for the files the model takes; results stream in input
    order, BATCH inputs per inference, with a throughput line on stderr at the end.
    """
    import json

    from edgekit.runtime.batch import predict

    run = predict(artifact, list(inputs), sample, batch, k, threads, device, not no_verify,
                  skip_bad)
    bar = None
    if run.count > 1 and sys.stderr.isatty():
        bar = click.progressbar(length=run.count, label="predict", file=sys.stderr)
        bar.__enter__()
    try:
        for result in run.results:
            if bar:
                bar.update(1)
            if as_json:
                click.echo(json.dumps(result))
            elif "error" in result:
                click.echo(f"{result['input']}  error: {result['error']}")
            elif run.count == 1:
                click.echo(f"{result['input']}"
                           + (f" (label {result['true_label']})" if "true_label" in result else "")
                           + f" -> {artifact.name}")
                for rank, t in enumerate(result["top"], 1):
                    click.echo(f"  {rank}. {t['label']:<12} {_p(t['probability'])}")
            else:
                click.echo(f"{result['input']}  " + "  ".join(
                    f"{t['label']} {_p(t['probability'])}" for t in result["top"]))
    finally:
        if bar:
            bar.__exit__(None, None, None)
    if run.count > 1:
        click.echo(run.stats.line(), err=True)


def _p(probability: float | None) -> str:
    return "nan" if probability is None else f"{probability:.4f}"


@main.command("verify")
@click.argument("export_dir", type=click.Path(path_type=Path))
def verify_cmd(export_dir):
    """Check every artifact EXPORT_DIR's manifest.json lists against its sha256 and size."""
    from edgekit.manifest import verify_export
    from edgekit.table import table

    rows = verify_export(export_dir)
    click.echo(table([("artifact", "size KB", "status", "why")] + [
        (r["file"], f"{r['bytes'] / 1024:.1f}" if r["bytes"] is not None else "-", r["status"],
         r["why"]) for r in rows]))
    failed = [r for r in rows if r["status"] in ("missing", "mismatch")]
    if failed:
        raise EdgekitError(f"{len(failed)} of {sum(r['status'] != 'unlisted' for r in rows)} "
                           "listed artifact(s) failed verification: " + ", ".join(
                               f"{r['file']} ({r['status']})" for r in failed))
    click.echo(f"ok: {sum(r['status'] == 'ok' for r in rows)} artifact(s) match "
               f"{export_dir / 'manifest.json' if export_dir.is_dir() else export_dir}")


@main.command("serve")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback is reachable from the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="TCP port (0 picks a free one and prints it).")
@click.option("--max-body", type=click.IntRange(min=1), default=10 * 1024 * 1024,
              show_default=True, help="Largest request body in bytes (413 beyond).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Seconds a request may take (504 beyond).")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=64, show_default=True,
              help="Requests in progress at once (503 beyond).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Requests decoded and run at once.")
@click.option("-k", "--top", "k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Default top-k (a request's ?k=N overrides it).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--no-verify", is_flag=True,
              help="Serve the artifact even if its sha256 differs from manifest.json's.")
@click.option("--access-log", is_flag=True, help="Log every request on stderr.")
def serve_cmd(artifact, host, port, max_body, timeout, max_concurrent, workers, k, threads,
              device, no_verify, access_log):
    """Serve ARTIFACT over HTTP: POST /predict, GET /health, GET /metadata."""
    from edgekit.runtime.serve import Limits, serve

    serve(artifact, host, port, Limits(max_body, timeout, max_concurrent, workers, k), threads,
          device, not no_verify, access_log)


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
