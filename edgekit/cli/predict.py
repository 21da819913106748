"""`edgekit predict`: run an artifact on inputs; print, stream or write its results."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgekit.cli.common import TOP_K
from edgekit.errors import EdgekitError


@click.command("predict")
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
@click.option("--exact-preprocessing", is_flag=True,
              help="Prepare images exactly as training did, even where the export allowed "
                   "the fast path (JPEG decoded at a reduced scale).")
@click.option("--camera", metavar="DEVICE", default=None,
              help="Predict a live camera's frames: an index (0, 1, ...) or a device path "
                   "(/dev/video0), until Ctrl-C or --max-frames.")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Video/camera: predict every N-th frame (the others are skipped).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="Video/camera: stop after reading N frames.")
def predict_cmd(artifact, inputs, sample, texts, k, batch, as_json, out, skip_bad, threads,
                device, no_verify, exact_preprocessing, camera, every, max_frames):
    """Predict INPUTS, --text TEXT or --sample N with ARTIFACT (.onnx, .ts, ...).

    ARTIFACT may be an export directory that `edgekit tune` tuned: its tuned.json's choice
    runs, with the tuned thread count unless --threads is given.

    INPUTS are files of the kind the model takes (images; .csv or .json tables for tabular
    models, every row predicted; .npy or .json numbers for array models; .txt for text models)
    or folders of them, searched recursively. Results stream in input order, BATCH inputs per
    inference (a table is read BATCH rows at a time, never whole), with a throughput line on
    stderr at the end. A stateful model (hidden state carried) reads its inputs in order, one
    at a time, as consecutive windows of one series.

    One video file (.mp4, .avi, .mkv, .mov, ...) or --camera DEVICE predicts frame by frame
    (the `video` extra: pip install 'edgekit[video]'): a line per frame with its index and
    time, and a closing line with frames read, predicted and dropped and the frames/s. A
    camera's frames that arrive while the model is busy are dropped, not queued; Ctrl-C or
    SIGTERM ends the run after the frame in hand, with the closing line.
    """
    import itertools
    import threading

    from edgekit.runtime.batch import predict

    if out is not None and as_json:
        raise EdgekitError("give --json (JSON Lines on stdout) or --out FILE.csv, not both")
    if out is not None and out.is_dir():
        raise EdgekitError(f"--out {str(out)!r} is a directory; expected a .csv file path")
    stop = threading.Event()
    run = predict(artifact, list(inputs), sample, batch, k, threads, device, not no_verify,
                  skip_bad, texts=list(texts), exact_preprocessing=exact_preprocessing,
                  camera=camera, every=every, max_frames=max_frames, stop=stop)
    if run.chosen:
        click.echo(f"using {run.chosen}", err=True)
    if run.frames:
        return _frames(run, stop, out, as_json)
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


def _frames(run, stop, out: Path | None, as_json: bool) -> None:
    """A video's or camera's results, a line per frame, until the source ends or a signal
    (Ctrl-C, SIGTERM) sets `stop`; the closing line comes whatever ended the run."""
    import signal

    def on_signal(signum, frame):
        run.stats.stopped = signal.Signals(signum).name
        stop.set()
        for s in handlers:  # a second signal ends the process the default way
            signal.signal(s, handlers[s])

    handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if out is None:
            _print_results(run.results, run, run.runner.path, as_json, True, None)
        else:
            _write_results(run.results, run, out, None)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
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
        name = result["input"] + (f" row {result['row']}" if "row" in result else "") + (
            f" frame {result['frame']} at {result['time']:.3f} s" if "frame" in result else "")
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
