"""`edgekit verify`: check an export's artifacts against its manifest."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.errors import EdgekitError


@click.command("verify")
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
