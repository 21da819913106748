"""`edgekit serve`: one artifact behind HTTP, through the same `Runner.predict` as the CLI.

Built on Starlette (routing, requests, multipart forms) and uvicorn (the server; HTTP/1.1 is
parsed by h11, so a malformed request gets uvicorn's 400 and never reaches this code). All
of them are pure-Python wheels, so the Pi (aarch64) installs exactly what x86 does, and
together they add about 4 MB: starlette, anyio, idna, uvicorn, h11, python-multipart.

    POST /predict[?k=N]   body: the input in a media type the manifest's preprocess kind takes
                          (images: image/*, application/octet-stream, or multipart/form-data
                          with one file part) -> the task's JSON result
    GET  /health          {"status": "ok", ...counters}
    GET  /metadata        the artifact's manifest, plus how it is served

Every failure is a JSON {"error": ..., "status": ...} with its status code: 400 bad input,
413 body over --max-body, 415 a media type the model does not take, 503 over
--max-concurrent requests in progress, 504 over --timeout. The server keeps serving after
each one. Connections are timed and bounded by edgekit.runtime.connections: a request's head
must arrive within --header-timeout (408), a body within --timeout + 5 s, and beyond
--max-connections the connection idle the longest is closed, so idle and slow clients cannot
starve /health or /predict. SIGTERM or Ctrl-C stops accepting connections, lets requests in
progress finish (--timeout + 5 s at most), and exits 0; work that outlived its deadline runs
in daemon threads, which never hold the process.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import sys
import time
from pathlib import Path

from edgekit.errors import EdgekitError, excerpt
from edgekit.runtime import Runner, load, preprocess
from edgekit.runtime.batcher import batcher_for, metrics_endpoint
from edgekit.runtime.connections import ConnectionLimits, Workers, guarded_protocol, open_file_limit
from edgekit.runtime.limits import Limits  # noqa: F401 (serve's face: Limits, serve)

log = logging.getLogger("edgekit.serve")


# Bytes of an oversized body read and dropped so that its 413 arrives; a bigger one is cut.
DRAIN_CAP = 64 * 1024 * 1024


class Counters:
    """What /health reports: requests seen, error responses, predictions in progress."""

    def __init__(self):
        self.started = time.monotonic()
        self.requests = 0
        self.errors = 0
        self.in_progress = 0


def create_app(runner: Runner, limits: Limits = Limits(), lanes: int = 1):
    """The ASGI application for `runner` (a Starlette app wrapped in the body-size limit);
    `lanes` model calls run at once. Raises EdgekitError for an artifact without a manifest."""
    import anyio
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    limits = limits.settled()  # an API caller's None: 2 workers, batches of 8
    manifest = runner._require_manifest()
    spec = manifest["preprocess"]
    kind = preprocess.get_kind(spec)
    accepts = [*kind.media_types, "multipart/form-data"]
    workers = Workers(limits.workers)  # work past its deadline keeps at most these threads
    counters = Counters()
    batcher = batcher_for(runner, limits, lanes)
    metrics = metrics_endpoint(counters, batcher)
    runner.check_finite = False  # warnings.warn is process-global; serve reports per request

    async def predict(request: Request) -> Response:
        k = _top_k(request, limits.k)
        if k is None:
            return _error(400, f"k={excerpt(request.query_params.get('k'))}; expected a positive "
                              "integer")
        media_type = _media_type(request.headers.get("content-type"))
        try:
            with anyio.fail_after(limits.timeout):
                body, media_type = await _body(request, media_type, limits.max_body)
                if not kind.accepts(media_type):
                    return _error(415, f"POST /predict takes {', '.join(accepts)} for "
                                      f"{runner.path.name} ({kind.name} input); got "
                                      f"{excerpt(media_type, quote=False)}")
                result = await batched(batcher, runner, body, media_type, k, workers)
            if isinstance(result, bytes):
                return Response(result, media_type="application/json")
            return JSONResponse(result)
        except TimeoutError:
            return _error(504, f"the request took longer than the server's --timeout "
                              f"{limits.timeout:g} s")
        except BadInput as e:
            return _error(400, str(e))
        except preprocess.UnsupportedMediaType as e:
            return _error(415, str(e))
        except EdgekitError as e:  # the model failed on a prepared input: the server's fault
            log.error("inference failed: %s", e)
            return _error(500, str(e))
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening any more

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "artifact": runner.path.name,
                             "uptime_s": round(time.monotonic() - counters.started, 3),
                             "requests": counters.requests, "errors": counters.errors,
                             "in_progress": counters.in_progress})

    async def metadata(request: Request) -> Response:
        return JSONResponse({**manifest, "serving": {
            **runner.describe(), "accepts": accepts,
            "limits": {"max_body_bytes": limits.max_body, "timeout_s": limits.timeout,
                       "max_concurrent": limits.max_concurrent, "default_k": limits.k}}})

    async def index(request: Request) -> Response:
        return JSONResponse({"artifact": runner.path.name, "endpoints": {
            "POST /predict": f"body: {', '.join(accepts)}; query k=N", "GET /health": "status",
            "GET /metadata": "the manifest", "GET /metrics": "batch sizes, queue/model time"}})

    app = Starlette(
        routes=[Route("/predict", predict, methods=["POST"]),
                Route("/health", health, methods=["GET"]),
                Route("/metadata", metadata, methods=["GET"]),
                Route("/metrics", metrics, methods=["GET"]),
                Route("/", index, methods=["GET"])],
        exception_handlers={HTTPException: _http_error},
    )
    return Guard(app, limits, counters)


def _error(status: int, message: str, **headers):
    """The JSON error answer: {"error": one line, "status": N}."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": " ".join(str(message).split()), "status": status},
                        status_code=status, headers=headers or None)


async def _http_error(request, exc) -> object:
    headers = {"connection": "close"} if exc.status_code == 413 else {}
    return _error(exc.status_code, exc.detail, **headers)


async def _body(request, media_type: str | None, max_body: int) -> tuple[bytes, str | None]:
    """The request's input and its media type: the file part of a multipart form, or the body."""
    if media_type == "multipart/form-data":
        return await _file_part(request, max_body)
    return await request.body(), media_type


def _top_k(request, default: int) -> int | None:
    """The request's ?k=N (the server's default without one); None if it is not N >= 1."""
    try:
        k = int(request.query_params.get("k", default))
    except ValueError:
        return None
    return k if k >= 1 else None


def work(runner: Runner, body: bytes, media_type: str | None, k: int) -> dict | bytes:
    """In a worker thread: decode + preprocess, run, decode outputs. A body of several inputs
    (a CSV of many rows) gets its results as JSON bytes, built a chunk at a time.

    Raises:
        BadInput: the body is not an input of the model's kind (HTTP 400).
    """
    t0 = time.perf_counter()
    x = prepare_body(runner, body, media_type)  # (B, ...)
    del body  # what stays is the inputs, not their text
    if len(x) > 1:
        return many_results(runner, x, k, time.perf_counter() - t0)
    t1 = time.perf_counter()
    result = runner.infer(x, k)[0]
    t2 = time.perf_counter()
    warning = runner.nonfinite_warning(x)
    if warning:
        result["warnings"] = [warning]
    result["artifact"] = runner.path.name
    result["ms"] = {"preprocess": round((t1 - t0) * 1e3, 3), "model": round((t2 - t1) * 1e3, 3)}
    return result


def prepare_body(runner: Runner, body: bytes, media_type: str | None):
    """In a worker thread: the body's model inputs (B, ...). Raises BadInput (HTTP 400)."""
    try:
        return runner.prepare_many(body, media_type)
    except preprocess.UnsupportedMediaType:
        raise
    except EdgekitError as e:
        raise BadInput(str(e)) from None


async def batched(batcher, runner: Runner, body: bytes, media_type: str | None, k: int,
                  workers) -> dict | bytes:
    """Decode in a worker thread (edgekit.runtime.connections.Workers), then run in the
    batcher's next model call (a body of many inputs, a table's rows, runs on its own in the
    worker; without a batcher, `work`)."""

    if batcher is None:
        return await workers.run(None, work, runner, body, media_type, k)

    def prepare():
        t0 = time.perf_counter()
        with batcher.expecting():
            return prepare_body(runner, body, media_type), time.perf_counter() - t0

    x, seconds = await workers.run(None, prepare)
    if len(x) > 1:
        return await workers.run(None, many_results, runner, x, k, seconds)
    result = await batcher.infer(x[0], k)
    warning = runner.nonfinite_warning(x)
    if warning:
        result["warnings"] = [warning]
    result["artifact"] = runner.path.name
    result["ms"] = {"preprocess": round(seconds * 1e3, 3), **result["ms"]}
    return result


def many_results(runner: Runner, x, k: int, prepare_seconds: float, chunk: int = 1024) -> bytes:
    """{"artifact", "count", "results": [{"row": n, **result}, ...], "ms"} for inputs (B, ...),
    written `chunk` rows at a time into one buffer: the JSON text is the only copy."""
    import io
    import json

    t0 = time.perf_counter()
    out = io.BytesIO()
    out.write(json.dumps({"artifact": runner.path.name, "count": len(x)})[:-1].encode()
              + b', "results": [')
    for i in range(0, len(x), chunk):
        out.write((", " if i else "").encode() + ", ".join(
            json.dumps({"row": i + j + 1, **r})
            for j, r in enumerate(runner.infer(x[i:i + chunk], k))).encode())
    tail = {"ms": {"preprocess": round(prepare_seconds * 1e3, 3),
                   "model": round((time.perf_counter() - t0) * 1e3, 3)}}
    warning = runner.nonfinite_warning(x)
    if warning:
        tail["warnings"] = [warning]
    out.write(b"], " + json.dumps(tail)[1:].encode())
    return out.getvalue()  # the buffer itself, not a copy


class BadInput(EdgekitError):
    """The request's input could not be read or prepared (HTTP 400)."""


class Guard:
    """ASGI middleware: count requests and error responses; refuse a request with 503 while
    `max_concurrent` others are in progress, or while the bodies of those in progress declare
    more than `body_memory` bytes with it; refuse a body over `max_body` bytes with 413,
    whether declared (Content-Length: its bytes read and dropped, up to DRAIN_CAP, before the
    answer) or streamed (chunked: refused as soon as it passes the limit).
    """

    def __init__(self, app, limits: Limits, counters: Counters):
        self.app = app
        self.max_body = limits.max_body
        self.max_concurrent = limits.max_concurrent
        self.counters = counters
        self.drain_cap = max(DRAIN_CAP, 2 * limits.max_body)
        self.body_memory = max(limits.body_memory or 4 * limits.max_body, limits.max_body)
        self.bodies = 0  # declared bytes of the /predict bodies in progress

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse

        counters = self.counters
        counters.requests += 1

        async def counted(message):
            if message["type"] == "http.response.start" and message["status"] >= 400:
                counters.errors += 1
            await send(message)

        def refuse(status: int, message: str):
            return JSONResponse({"error": message, "status": status}, status_code=status,
                                headers={"connection": "close"})

        heavy = scope["path"] == "/predict"  # /health and /metadata answer even when busy
        if heavy and counters.in_progress >= self.max_concurrent:
            return await refuse(503, f"the server is busy: {self.max_concurrent} request(s) in "
                                     "progress (--max-concurrent); retry shortly")(
                scope, receive, counted)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        declared = int(length) if length is not None and length.isdigit() else 0
        too_big = declared > self.max_body
        busy = heavy and self.bodies + declared > self.body_memory
        if too_big or busy:
            # Read and drop the whole body before answering (up to DRAIN_CAP; not when the
            # client waits for "100 Continue"): closing on unread data resets the connection,
            # and the client (Python's urllib, which sends it all first) never sees the 413.
            if b"100-continue" not in headers.get(b"expect", b"").lower() \
                    and declared <= self.drain_cap:
                await self._drain(receive, declared)
            message = (f"request body of {declared} bytes is over the server's limit of "
                       f"{self.max_body} bytes (--max-body)" if too_big else
                       f"the server is busy: {self.bodies} bytes of request bodies in progress, "
                       f"{self.body_memory} at most; retry shortly")
            return await refuse(413 if too_big else 503, message)(scope, receive, counted)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    if message.get("more_body"):
                        await self._drain(receive, self.drain_cap)
                    raise HTTPException(413, f"request body is over the server's limit of "
                                             f"{self.max_body} bytes (--max-body)")
            return message

        counters.in_progress += heavy
        held = declared if heavy else 0  # bodies in memory: bounded by body_memory in all
        self.bodies += held
        try:
            await self.app(scope, limited, counted)
        finally:
            counters.in_progress -= heavy
            self.bodies -= held


    @staticmethod
    async def _drain(receive, limit: int, seconds: float = 5.0) -> None:
        """Read and drop up to `limit` more body bytes, for at most `seconds`."""
        import anyio

        got = 0
        with anyio.move_on_after(seconds):
            while got <= limit:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body"):
                    return
                got += len(message.get("body", b""))


async def _file_part(request, max_body: int) -> tuple[bytes, str | None]:
    """The one file of a multipart/form-data body, and its declared media type."""
    from starlette.datastructures import UploadFile

    form = await request.form(max_files=1, max_fields=16, max_part_size=max_body)
    files = [v for v in form.values() if isinstance(v, UploadFile)]
    if not files:
        raise BadInput("multipart/form-data body has no file part; send the input as a file "
                       "(curl -F file=@image.png)")
    try:
        body = await files[0].read()
    finally:
        await form.close()
    media_type = _media_type(files[0].content_type)
    # Browsers and curl label unknown files application/octet-stream: let the bytes decide.
    return body, None if media_type == "application/octet-stream" else media_type


def _media_type(header: str | None) -> str | None:
    """"image/PNG; charset=x" -> "image/png"; missing -> None."""
    if not header:
        return None
    return header.split(";", 1)[0].strip().lower() or None


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 picks a free one).

    Raises:
        EdgekitError: the host does not resolve, the port is taken or not allowed.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise EdgekitError(f"--host {host!r} does not resolve to an address ({e})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        why = "is in use" if e.errno == 98 else f"cannot be used ({e.strerror})"
        raise EdgekitError(f"port {port} on {host} {why}; choose another --port") from None
    return sock


def is_loopback(address: str) -> bool:
    """Whether a bound address is reachable from this machine only ("::1", "127.0.0.1")."""
    return ipaddress.ip_address(address.split("%")[0]).is_loopback


def serve(artifact: str | Path, host: str = "127.0.0.1", port: int = 8080,
          limits: Limits = Limits(), threads: int | None = None, device: str = "cpu",
          verify: bool = True, access_log: bool = False,
          exact_preprocessing: bool = False) -> int:
    """Load `artifact`, bind host:port and serve until SIGTERM or Ctrl-C.

    `artifact` may be an export directory: the file its tuned.json chose is served, with the
    tuned thread count per worker unless `threads` is given (edgekit.tuned.resolve).
    `exact_preprocessing` prepares images exactly as training did, even where the export
    allowed the fast path.

    Returns:
        The number of requests served.

    Raises:
        EdgekitError: a bad artifact, an artifact without a manifest, or an unusable address.
    """

    import uvicorn

    from edgekit.machine import usable_cores
    from edgekit.runtime.batch import lanes_for
    from edgekit.tuned import resolve

    artifact, threads, _ = resolve(artifact, threads)
    per, lanes = lanes_for(artifact, threads, device)
    limits = limits.settled(lanes)
    if limits.max_batch > 1:  # batches in lanes where the backend allows it, else every core
        threads = per if lanes > 1 else threads or usable_cores()
    else:
        lanes = 1  # the workers are the lanes
    if threads is None:  # the cores shared among the workers: under load, parallel
        threads = max(1, usable_cores() // limits.workers)  # requests beat parallel kernels
    runner = load(artifact, threads=threads, device=device, verify=verify)
    runner.exact_preprocessing = exact_preprocessing
    app = create_app(runner, limits, lanes if not runner.stateful else 1)
    runner.warm_up()
    sock = bind(host, port)
    name, bound_port = sock.getsockname()[:2]
    url = f"http://{'[' + name + ']' if ':' in name else name}:{bound_port}"
    if not is_loopback(name):
        print(f"warning: listening on {name}, reachable from other machines; edgekit serve has "
              "no authentication", file=sys.stderr, flush=True)
    # Connections are bounded and timed by the protocol (edgekit.runtime.connections), not
    # by uvicorn's limit_concurrency: that answers every request, /health too, with 503.
    connections = ConnectionLimits(open_file_limit(limits.max_connections),
                                   limits.header_timeout, limits.timeout + 5)
    if connections.max_connections < limits.max_connections:
        print(f"edgekit serve: --max-connections {limits.max_connections} lowered to "
              f"{connections.max_connections} (the open-file limit, ulimit -Hn)",
              file=sys.stderr, flush=True)
    config = uvicorn.Config(
        app, http=guarded_protocol(connections), loop="asyncio", lifespan="off",
        log_level="info" if access_log else "warning",
        access_log=access_log, timeout_keep_alive=5,
        timeout_graceful_shutdown=int(limits.timeout) + 5, server_header=False)
    server = uvicorn.Server(config)

    def stop(*_) -> None:
        server.should_exit = True

    # Before uvicorn installs its own handlers, a SIGTERM (say, right after the start line)
    # still stops the server: uvicorn skips its main loop when should_exit is set. After it
    # shut down, uvicorn re-raises the signal that stopped it: here that is a no-op, and the
    # process exits 0 instead of dying of SIGTERM.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    in_lanes = f" x {lanes} lanes" if lanes > 1 else ""
    print(f"edgekit serve: {runner.path.name} ({runner.backend}, {runner.device}, {limits.workers} "
          f"worker(s), {threads} model thread(s){in_lanes}, batches of up to {limits.max_batch}) "
          f"on {url} "
          "(POST /predict, GET /health, GET /metadata); Ctrl-C or SIGTERM stops",
          file=sys.stderr, flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    served = app.counters.requests
    print(f"edgekit serve: stopped after {served} request(s)", file=sys.stderr, flush=True)
    return served
