"""`edgekit tune`: choose the artifact and thread count an export runs with on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli.common import parse_counts


@click.command("tune")
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
