"""The `edgekit` command: each subcommand parses its arguments and calls one library function.

Heavy imports (torch, onnx) happen inside the commands that need them, so `predict` and `bench`
on .onnx files run on a machine without torch.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from edgekit import __version__
from edgekit.errors import EdgekitError, Interrupted
from edgekit.rundir import RunDir

# Labels `predict` shows and `serve` returns unless asked (serve.Limits.k says the same).
TOP_K = 3

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
        except Interrupted as e:  # a checkpoint was saved: the conventional 128 + signal
            click.echo(f"error: {' '.join(str(e).split())}", err=True)
            sys.exit(e.exit_code)
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
        data = r.data.name + (f" (else {r.data.fallback})" if r.data.fallback else "")
        rows.append((name, r.model.name, data, r.description))
    click.echo(table(rows))


@main.command("train")
@click.argument("recipe", required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set train.epochs=5 (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run directory to create (default runs/RECIPE-TIMESTAMP).")
@click.option("--resume", type=click.Path(path_type=Path), default=None, metavar="RUN",
              help="Continue the unfinished run RUN from its last checkpoint.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def train_cmd(recipe, overrides, out, resume, no_progress):
    """Train RECIPE (a bundled name or a .yaml path) and write a run directory.

    SIGINT/SIGTERM finish the current step, save a checkpoint and exit with 130/143;
    `--resume RUN` then continues to the result an unbroken run would have reached.
    Under `torchrun --nproc_per_node=N -m edgekit train ...` the processes train in parallel.
    """
    import json

    from edgekit import train as training
    from edgekit.recipe import load_recipe
    from edgekit.tasks import get_task

    if resume is not None:
        if recipe or overrides or out:
            raise EdgekitError("--resume RUN continues RUN with its own recipe: give no RECIPE, "
                               "--set or --out")
        run = training.resume(resume, progress=not no_progress)
    elif recipe is None:
        raise EdgekitError("give a RECIPE to train (see `edgekit recipes`) or --resume RUN")
    else:
        run = training.train(load_recipe(recipe, overrides), out, progress=not no_progress)
    if run is None:  # a torchrun rank other than 0: rank 0 reports
        return
    m = json.loads(RunDir(run).metrics.read_text())
    task = get_task(m["task"])
    click.echo(f"run: {run}")
    click.echo(f"test {task.metric} {task.format(m['test_' + task.metric])} on "
               f"{m['test_samples']} held-out samples ({len(m['history'])} epochs, "
               f"{m['train_seconds']:.1f} s on {m['device']}"
               + (f" x {m['processes']} processes" if m["processes"] > 1 else "") + ")")
    if "qat" in m:  # the metric above is the fake-quantized model's
        base = m["qat"].get(f"base_test_{task.metric}")
        click.echo(f"quantization-aware: int8 simulated; the run it fine-tuned, "
                   f"{m['qat']['base']}, had {task.format(base) if base is not None else '?'} "
                   f"in fp32; next: edgekit export {run} --onnx --pte --int8")
    if "sample" in m:
        click.echo(f"held-out image: {run / m['sample']['file']} (label {m['sample']['label']})")


@main.command("import")
@click.argument("source")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The run directory to create (then: edgekit export RUN ...).")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="The model's state dict: .safetensors, or .pt/.pth (read weights_only).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Your images: a folder of class folders (labeled), or a flat folder "
                   "(unlabeled: int8 is checked by agreement with fp32).")
@click.option("--labels", default=None, metavar="FILE|a,b,c",
              help="Class names: a text file (one per line) or a comma-separated list.")
@click.option("--input-shape", default=None, metavar="CxHxW",
              help="One input without the batch, e.g. 3x224x224 (read from .onnx/.pt2).")
@click.option("--mode", type=click.Choice(["RGB", "L"]), default=None,
              help="Colour mode images are converted to (default: from the input's channels).")
@click.option("--resize", type=click.IntRange(min=0), default=0,
              help="Resize the shorter side to N, then center-crop --image-size.")
@click.option("--image-size", type=click.IntRange(min=0), default=0,
              help="The model's input size N (N x N).")
@click.option("--normalize", default="none", show_default=True,
              metavar="imagenet|none|M,M,M/S,S,S",
              help="How pixels in [0, 1] are normalized, as in your training.")
@click.option("--task", type=click.Choice(["classification", "raw"]), default=None,
              help="classification (one (B, K) output) or raw (named output arrays); "
                   "default: from the outputs.")
def import_cmd(source, out, weights, data, labels, input_shape, mode, resize, image_size,
               normalize, task):
    """Make a run directory of SOURCE, a model edgekit did not train, checked on --data.

    SOURCE is FILE.py:NAME or package.module:NAME (an nn.Module class, or a function returning
    one), torchvision:NAME or timm:NAME (with --weights), a .pt2 (torch.export.save), or an
    .onnx file (no PyTorch needed). Then: edgekit export RUN --onnx --pte --int8.
    """
    import edgekit

    run = edgekit.import_model(source, out, weights=weights, data=data, labels=labels,
                               input_shape=input_shape, mode=mode, resize=resize,
                               image_size=image_size, normalize=normalize, task=task)
    click.echo(run.summary_line())
    click.echo(f"next: edgekit export {run.path} --onnx --int8"
               + (" --pte" if run.source_kind != "onnx" else ""))


def format_flags(command):
    """`--FAMILY` for each format family and `--PRECISION` for each other precision, from the
    format catalog (edgekit.formats): a new format brings its own flag."""
    from edgekit import formats

    for precision in reversed(formats.precisions()):
        made = " and/or ".join(f.help for f in formats.formats() if f.precision == precision)
        command = click.option(f"--{precision}", is_flag=True,
                               help=f"Also write {precision} of each format asked for: {made}.")(
            command)
    for family in reversed(formats.families()):
        fp32 = next(f for f in formats.formats() if f.format == family)
        command = click.option(f"--{family}", is_flag=True, help=fp32.help)(command)
    return command


@main.command("export")
@click.argument("run", type=click.Path(path_type=Path), required=False)
@format_flags
@click.option("--target", default="local", show_default=True, metavar="TARGET",
              help="Where the model will run: local (this CPU: int8 layouts timed, the fastest "
                   "kept), or a documented preset: x86, pi4, pi5, arm64.")
@click.option("--int8-method", default=None, metavar="METHOD",
              help="auto, static (calibrated) or dynamic int8; default: the recipe's "
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
@click.option("--no-int8-fallback", "no_int8_fallback", is_flag=True,
              help="When int8 ONNX fails its accuracy check, fail (or --allow-degraded) "
                   "instead of searching calibration methods and keeping layers fp32.")
@click.option("--keep-candidates", is_flag=True,
              help="Also ship every int8 candidate that passed its check (candidates/) and "
                   "the host's outputs of each file (references.npz), for `edgekit tune` on "
                   "the device.")
def export_cmd(run, target, int8_method, exclude, allow_degraded, max_int8_drop, tune_seconds,
               no_int8_fallback, keep_candidates, **flags):
    """Export RUN's model and verify every artifact against PyTorch.

    Only the formats asked for are rebuilt; other files in RUN/export are kept. Without RUN,
    the most recently finished run under runs/ is exported.
    """
    from edgekit import formats as catalog
    from edgekit.exporting import export, report_markdown
    names = catalog.select([f for f in catalog.families() if flags[f]],
                           [p for p in catalog.precisions() if flags[p]])
    layers = tuple(n.strip() for item in exclude for n in item.split(",") if n.strip())
    if run is None:
        from edgekit.rundir import latest_run

        run = latest_run()
        click.echo(f"exporting {run} (the latest finished run under runs/)", err=True)
    report = export(run, names, target=target, int8_method=int8_method, exclude=layers,
                    allow_degraded=allow_degraded, max_int8_drop=max_int8_drop,
                    tune_seconds=tune_seconds, int8_fallback=not no_int8_fallback,
                    keep_candidates=keep_candidates)
    click.echo(report_markdown(report).rstrip())
    click.echo(f"artifacts: {RunDir(run).export}")


@main.command("predict")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--sample", type=int, default=None,
              help="Use held-out sample N shipped with the export instead of INPUTS.")
@click.option("--text", "texts", multiple=True, metavar="TEXT",
              help="Text to predict on, for a model of text input (repeatable).")
@click.option("-k", "--top", "k", type=click.IntRange(min=1), default=TOP_K,
              show_default=True, help="How many labels to show.")
@click.option("--batch", type=click.IntRange(min=1, max=4096), default=32, show_default=True,
              help="Inputs per inference when predicting many.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per input (JSON Lines) on stdout.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write the results to this CSV file (one line per input or table row) "
                   "instead of stdout.")
@click.option("--skip-bad", is_flag=True,
              help="Report an unreadable input or table row (an error entry) and go on, "
                   "instead of stopping.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--no-verify", is_flag=True,
              help="Load the artifact even if its sha256 differs from manifest.json's.")
def predict_cmd(artifact, inputs, sample, texts, k, batch, as_json, out, skip_bad, threads,
                device, no_verify):
    """Predict INPUTS, --text TEXT or --sample N with ARTIFACT (.onnx, .ts, ...).

    ARTIFACT may be an export directory that `edgekit tune` tuned: its tuned.json's choice
    runs, with the tuned thread count unless --threads is given.

    INPUTS are files of the kind the model takes (images; .csv or .json tables for tabular
    models, every row predicted; .npy or .json numbers for array models; .txt for text models)
    or folders of them, searched recursively. Results stream in input order, BATCH inputs per
    inference (a table is read BATCH rows at a time, never whole), with a throughput line on
    stderr at the end. A stateful model (hidden state carried) reads its inputs in order, one
    at a time, as consecutive windows of one series.
    """
    import itertools

    from edgekit.runtime.batch import predict

    if out is not None and as_json:
        raise EdgekitError("give --json (JSON Lines on stdout) or --out FILE.csv, not both")
    if out is not None and out.is_dir():
        raise EdgekitError(f"--out {str(out)!r} is a directory; expected a .csv file path")
    run = predict(artifact, list(inputs), sample, batch, k, threads, device, not no_verify,
                  skip_bad, texts=list(texts))
    if run.chosen:
        click.echo(f"using {run.chosen}", err=True)
    results = iter(run.results)
    head = list(itertools.islice(results, 2))  # one result or many: how lines look
    many = len(head) > 1
    bar = None
    if many and sys.stderr.isatty():
        bar = click.progressbar(length=run.count or run.total_bytes or 1, label="predict",
                                file=sys.stderr)
        bar.__enter__()
    try:
        if out is None:
            _print_results(itertools.chain(head, results), run, run.runner.path, as_json, many,
                           bar)
        else:
            _write_results(itertools.chain(head, results), run, out, bar)
    finally:
        if bar:
            bar.__exit__(None, None, None)
    if many or out is not None:
        click.echo(run.stats.line(), err=True)


def _progress(bar, run) -> None:
    if bar is None:
        return
    if run.count:
        bar.update(1)
    else:  # a table: how far through its bytes
        bar.update(run.stats.bytes_read - bar.pos)


def _write_results(results, run, out: Path, bar) -> None:
    """The results as CSV in `out`, written whole or not at all."""
    from edgekit.fileio import atomic_path
    from edgekit.runtime.batch import ResultsCsv

    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = ResultsCsv(f)
        for result in results:
            _progress(bar, run)
            writer.write(result)
        writer.close()
    click.echo(f"wrote {writer.rows} result(s) to {out}", err=True)


def _print_results(results, run, artifact: Path, as_json: bool, many: bool, bar) -> None:
    import json

    from edgekit.tasks import get_task

    task = get_task(run.runner.manifest["task"])
    for result in results:
        _progress(bar, run)
        name = result["input"] + (f" row {result['row']}" if "row" in result else "")
        if as_json:
            click.echo(json.dumps(result))
        elif "error" in result:
            click.echo(f"{name}  error: {result['error']}")
        elif "top" not in result:  # values, or decoded text: the task's own line
            click.echo(f"{name}  {task.line(result)}" if many else task.line(result))
            if "true_label" in result:
                click.echo(f"({name}: expected {result['true_label']})")
        elif not many:
            click.echo(f"{name}"
                       + (f" (label {result['true_label']})" if "true_label" in result else "")
                       + f" -> {artifact.name}")
            for rank, t in enumerate(result["top"], 1):
                click.echo(f"  {rank}. {t['label']:<12} {_p(t['probability'])}")
        else:
            click.echo(f"{name}  " + "  ".join(
                f"{t['label']} {_p(t['probability'])}" for t in result["top"]))


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
              help="Requests decoded and run at once (1 gives one request all the threads).")
@click.option("-k", "--top", "k", type=click.IntRange(min=1), default=TOP_K,
              show_default=True, help="Default top-k (a request's ?k=N overrides it).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Intra-op threads per worker (default: cores / workers).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--no-verify", is_flag=True,
              help="Serve the artifact even if its sha256 differs from manifest.json's.")
@click.option("--access-log", is_flag=True, help="Log every request on stderr.")
def serve_cmd(artifact, host, port, max_body, timeout, max_concurrent, workers, k, threads,
              device, no_verify, access_log):
    """Serve ARTIFACT over HTTP: POST /predict, GET /health, GET /metadata.

    ARTIFACT may be an export directory that `edgekit tune` tuned: its tuned.json's choice is
    served, with the tuned thread count per worker unless --threads is given.
    """
    from edgekit.runtime.serve import Limits, serve

    serve(artifact, host, port, Limits(max_body, timeout, max_concurrent, workers, k), threads,
          device, not no_verify, access_log)


class BenchGroup(click.Group):
    """`edgekit bench ARTIFACT|RUN...` times artifacts; `edgekit bench compare A.json ...` compares.

    Only the word `compare` picks a subcommand; any other first argument is an artifact or a
    run directory, handed to the hidden timing command. So `edgekit bench run` benchmarks a
    directory called "run", and a directory called "compare" is written ./compare.
    """

    def parse_args(self, ctx, args):
        if not args or args[0] != "compare":
            args = [TIME, *args]  # --help included: the everyday form's help
        return super().parse_args(ctx, args)


class BenchTimeContext(click.Context):
    @property
    def command_path(self) -> str:  # usage and "Try ... --help" lines show what users type
        return self.parent.command_path


class BenchTime(click.Command):
    """The timing command, shown as `edgekit bench`: users never type its name."""

    context_class = BenchTimeContext


TIME = "time"  # the hidden command's name; users never type it


@main.group("bench", cls=BenchGroup)
def bench_group():
    """Time artifacts on this machine, or compare result files from several machines."""


@bench_group.command(TIME, cls=BenchTime, hidden=True,
                     epilog="Compare machines: edgekit bench compare A.json B.json (see "
                     "edgekit bench compare --help).")
@click.argument("artifacts", nargs=-1, required=True, metavar="ARTIFACT|RUN...",
                type=click.Path(path_type=Path))
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="Timed calls per artifact and setting  [default: 200].")
@click.option("--seconds", type=float, default=None,
              help="Time budget per artifact and setting, instead of --runs.")
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True,
              help="Untimed calls first.")
@click.option("--threads", default=None, metavar="N[,N...]",
              help="Intra-op threads, e.g. 1,2 or 1,all (default: all cores).")
@click.option("--batch", default="1", show_default=True, metavar="N[,N...]",
              help="Inputs per call, e.g. 1,8.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="JSON report (default: bench.json beside the first artifact).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the JSON report instead of the table.")
def bench_cmd(artifacts, runs, seconds, warmup, threads, batch, out, as_json):
    """Measure the latency of artifacts (.onnx, .ts) or run directories on this machine.

    A run directory stands for every artifact its export verified. Prints p50/p90/p99, mean,
    std, CV, the 95% interval of the median and throughput, per artifact, thread count and
    batch size; names the fastest artifact only when its interval overlaps no other's, and
    warns when a measurement was noisy (CV > 10%).
    """
    from edgekit.bench import bench, expand, format_table
    from edgekit.fileio import atomic_path, json_text
    from edgekit.machine import usable_cores

    if runs is not None and seconds is not None:
        raise EdgekitError("give --runs or --seconds, not both")
    if seconds is not None and not 0 < seconds < math.inf:
        raise EdgekitError(f"--seconds {seconds:g}: expected a time budget > 0")
    thread_counts = parse_counts(threads or "all", "--threads", all_value=usable_cores())
    batches = parse_counts(batch, "--batch")
    files, _ = expand(artifacts)  # a bad directory fails before --out is claimed
    out = out or files[0].with_name("bench.json")
    if out.is_dir():  # checked before timing, so no measurement is lost
        raise EdgekitError(f"--out {str(out)!r} is a directory; expected a .json file path")
    with atomic_path(out) as tmp:  # claimed first: an unwritable --out fails before timing
        report = bench(list(artifacts), runs=runs or 200, warmup=warmup, threads=thread_counts,
                       batch=batches, seconds=seconds)
        tmp.write_text(json_text(report), encoding="utf-8")
    if as_json:
        click.echo(json_text(report), nl=False)
    else:
        click.echo(format_table(report))
        click.echo(f"wrote {out}")
    for line in report["skipped"]:
        click.echo(f"skipped: {line}", err=True)
    for line in noise_lines(report):
        click.echo(f"warning: {line}", err=True)


@bench_group.command("compare")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--baseline", default=None, metavar="FILE|LETTER",
              help="The machine ratios divide by: one of the files, or its letter (default A, "
                   "the first).")
@click.option("--chart", type=click.Path(path_type=Path), default=Path("bench-compare.png"),
              show_default=True, help="The PNG bar chart to write.")
@click.option("--no-chart", is_flag=True, help="Print the table only.")
@click.option("--any-threads", is_flag=True,
              help="Match artifacts whatever their thread counts (each file's run with the "
                   "most threads); by default only equal counts match, 'all' matching 'all'.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def bench_compare_cmd(results, baseline, chart, no_chart, any_threads, as_json):
    """Compare bench RESULTS (JSON of `edgekit bench` or `make bench`) from several machines.

    Prints the median latency of each artifact on each machine, side by side, with ratios to
    the baseline machine, and writes a PNG bar chart. Emulated (qemu) results are labelled.
    """
    from edgekit.bench import compare, format_compare
    from edgekit.fileio import json_text

    report = compare(list(results), baseline=baseline, match_threads=not any_threads)
    if not no_chart and chart.is_dir():
        raise EdgekitError(f"--chart {str(chart)!r} is a directory; expected a .png file path")
    if as_json:
        click.echo(json_text(report), nl=False)
    else:
        click.echo(format_compare(report))
    if not no_chart:
        try:
            from edgekit.bench.chart import bar_chart
            click.echo(f"wrote {bar_chart(report, chart)}", err=as_json)
        except ImportError as e:
            if e.name != "matplotlib":
                raise
            click.echo("warning: no chart: it needs matplotlib (pip install matplotlib, or "
                       "the train extra); the table above is complete", err=True)


def noise_lines(report: dict, most: int = 3) -> list[str]:
    """The bench's noise warnings, folded into one line when there are many."""
    lines = report["warnings"]
    if len(lines) <= most:
        return lines
    noisy = sorted((r for r in report["results"] if r["noisy"]), key=lambda r: -r["cv"])
    worst = ", ".join(f"{r['label']} b{r['batch']} t{r['threads']} {r['cv']:.0%}"
                      for r in noisy[:most])
    return [f"{len(noisy)} of {len(report['results'])} results are too noisy (CV > 10%; "
            f"worst: {worst}); medians are less reliable: close other programs, or raise "
            "--runs / --seconds"]


def parse_counts(text: str, option: str, all_value: int | None = None) -> list[int]:
    """"1,2,8" -> [1, 2, 8]; "all" -> all_value where allowed. One-line error otherwise."""
    counts = []
    for part in str(text).split(","):
        part = part.strip()
        if all_value is not None and part == "all":
            counts.append(all_value)
        elif part.isdigit() and int(part) > 0:
            counts.append(int(part))
        else:
            expected = "positive whole numbers separated by commas, e.g. 1,8" + (
                ", or 'all'" if all_value is not None else "")
            raise EdgekitError(f"{option} {text!r}: expected {expected}")
    return counts


@main.command("tune")
@click.argument("folder", metavar="EXPORT_DIR", type=click.Path(path_type=Path))
@click.option("--threads", default=None, metavar="N[,N...]",
              help="Thread counts to try, e.g. 1,2,4 or 1,all (default: 1, 2, 4, ... up to "
                   "every core).")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Timed seconds per file and thread count  [default: 2].")
def tune_cmd(folder, threads, seconds):
    """Choose, on this machine, the artifact and thread count EXPORT_DIR runs with.

    Checks every shipped file (published artifacts, and the int8 candidates of `edgekit export
    --keep-candidates`) against the host's outputs on samples.npz, refusing one that miscomputes
    here; times those that pass with the bench harness; writes EXPORT_DIR/tuned.json, which
    `edgekit predict EXPORT_DIR` and `edgekit serve EXPORT_DIR` then follow.
    """
    from edgekit.machine import usable_cores
    from edgekit.tune import DEFAULT_SECONDS, format_table, tune
    from edgekit.tuned import FILE, export_dir

    counts = parse_counts(threads, "--threads", all_value=usable_cores()) if threads else None
    doc = tune(folder, counts, DEFAULT_SECONDS if seconds is None else seconds)
    for line in doc["skipped"]:
        click.echo(f"skipped: {line}", err=True)
    for line in doc["refused"]:
        click.echo(f"refused: {line}", err=True)
    click.echo(format_table(doc))
    click.echo(f"wrote {export_dir(folder) / FILE}")


@main.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds each self-test process may take.")
def doctor_cmd(as_json, timeout):
    """Check that this machine runs edgekit well: CPU, board, libraries, int8 and torch.

    Exits 1 if a check failed (a self-test that crashed or computed wrong results).
    """
    from edgekit.doctor import diagnose, format_report
    from edgekit.fileio import json_text

    report = diagnose(timeout=timeout)
    click.echo(json_text(report).rstrip() if as_json else format_report(report))
    if not report["ok"]:
        sys.exit(1)


@main.command("summary")
@click.argument("run", type=click.Path(path_type=Path))
def summary_cmd(run):
    """Print accuracy, size and latency of RUN's model and artifacts as one table."""
    from edgekit.summary import summarize

    click.echo(summarize(run))


if __name__ == "__main__":
    main()
