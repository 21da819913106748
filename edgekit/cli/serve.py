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
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Requests decoded and run at once (1 gives one request all the threads; "
                   "default: one per core for an ONNX model on the CPU, else 2).")
@click.option("-k", "--top", "k", type=click.IntRange(min=1), default=TOP_K,
              show_default=True, help="Default top-k (a request's ?k=N overrides it).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Intra-op threads per worker (default: cores / workers).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--no-verify", is_flag=True,
              help="Serve the artifact even if its sha256 differs from manifest.json's.")
@click.option("--access-log", is_flag=True, help="Log every request on stderr.")
@click.option("--max-connections", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Open connections at once (the oldest idle one is closed beyond).")
@click.option("--header-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Seconds for a request's head to arrive (408 beyond).")
@click.option("--exact-preprocessing", is_flag=True,
              help="Prepare images exactly as training did, even where the export allowed "
                   "the fast path (JPEG decoded at a reduced scale).")
@click.option("--max-batch", type=click.IntRange(min=1), default=None,
              help="Requests run together in one model call (1: each on its own; default: 1 "
                   "for an ONNX model on the CPU, whose workers run in lanes, else 8).")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="The most a request waits for others still decoding to join its batch.")
def serve_cmd(artifact, host, port, max_body, timeout, max_concurrent, workers, k, threads,
              device, no_verify, access_log, max_connections, header_timeout,
              exact_preprocessing, max_batch, max_wait_ms):
    """Serve ARTIFACT over HTTP: POST /predict, GET /health, GET /metadata.

    ARTIFACT may be an export directory that `edgekit tune` tuned: its tuned.json's choice is
    served, with the tuned thread count per worker unless --threads is given.
    """
    from edgekit.runtime.serve import Limits, serve

    limits = Limits(max_body, timeout, max_concurrent, workers, k, max_batch, max_wait_ms / 1e3,
                    max_connections=max_connections, header_timeout=header_timeout)
    serve(artifact, host, port, limits, threads, device, not no_verify, access_log,
          exact_preprocessing)
