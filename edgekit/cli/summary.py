"""`edgekit summary`: one table of a run's accuracy, size and latency."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("summary")
@click.argument("run", type=click.Path(path_type=Path))
def summary_cmd(run):
    """Print accuracy, size and latency of RUN's model and artifacts as one table."""
    from edgekit.summary import summarize

    click.echo(summarize(run))
