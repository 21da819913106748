"""`edgekit serve`: serve an artifact over HTTP."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli.common import TOP_K


@click.command("serve")
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
