"""`edgekit doctor`: check that this machine runs edgekit well."""

from __future__ import annotations

import sys

import click


@click.command("doctor")
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
