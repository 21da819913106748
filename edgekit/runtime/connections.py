"""`edgekit serve`'s connection layer: deadlines and a bound on open connections, and the
worker threads that run requests, so that idle or slow clients cannot take the server down.

uvicorn times out a keep-alive connection only after a response, and counts open connections
into a plain-text 503 for every request (`/health` too) once its `limit_concurrency` is
reached: 280 sockets that never send a byte took a server down. Here, per connection:

- head deadline: a request's head must arrive whole within `header_timeout` seconds of the
  connection opening or of the last response (a byte a second does not extend it: slowloris);
  an idle connection is closed, a partial head gets a JSON 408;
- body deadline: a body must arrive whole within `body_timeout` seconds of its head (the
  route's own --timeout answers 504 first; this closes what no route reads);
- a half-closed client (EOF after a whole request) still gets its answer, then the close;
- over `max_connections` open, the connection that has waited longest for its next request
  is closed to make room (the oldest idle first); only when none is idle is the new one
  refused, with a JSON 503.

`Workers` runs each request's work in one of a fixed number of daemon threads: work that
outlives its deadline keeps its thread (Python cannot stop it) but never more than `workers`
of them, queued work whose request gave up is dropped, and a stuck thread does not keep the
process alive after SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import queue
import resource
import threading
import time
from dataclasses import dataclass

from h11 import SEND_BODY  # uvicorn's HTTP parser: serve's own dependency

# Descriptors kept free beside the connections: the model file, threads, logs, the listener.
RESERVED_FILES = 64


@dataclass
class ConnectionLimits:
    """How long a client may take, and how many may be connected at once."""

    max_connections: int = 1024  # open at once; the oldest idle one is closed beyond
    header_timeout: float = 10.0  # seconds for a request's head (from connect or last answer)
    body_timeout: float = 35.0  # seconds for a body, from its head


def raw_json_response(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 response {"error": message, "status": status} that closes the
    connection, for answers given outside any request (none was read whole)."""
    body = json.dumps({"error": message, "status": status}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


def open_file_limit(connections: int) -> int:
    """Raise this process's soft limit on open files (up to the hard one) so that
    `connections` sockets fit beside RESERVED_FILES others.

    Returns:
        The number of connections that fit (`connections`, or fewer under a low hard limit).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return connections
    return max(1, min(connections, soft - RESERVED_FILES))


class ConnectionGuard:
    """The timing and counting half of the protocol: mixed before uvicorn's H11Protocol by
    `guarded_protocol`, which sets `limits` and `registry` (see the module docstring)."""

    limits: ConnectionLimits
    registry: dict

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.ready_since = time.monotonic()  # waiting for a request since
        self.heard = False  # bytes of the next request seen
        self.seen_cycle = None
        self.deadline = None
        self.registry[self] = None
        self.arm(self.limits.header_timeout, self.head_expired)
        if len(self.registry) > self.limits.max_connections:
            self.shed()

    def connection_lost(self, exc) -> None:
        self.registry.pop(self, None)
        self.disarm()
        super().connection_lost(exc)

    def in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def shed(self) -> None:
        """Close the connection idle the longest (not this one), or refuse this one."""
        idle = [c for c in self.registry if c is not self and not c.in_request()]
        if idle:
            oldest = min(idle, key=lambda c: (c.heard, c.ready_since))
            oldest.transport.close()
            return
        self.transport.write(raw_json_response(
            503, "Service Unavailable", f"the server is busy: {self.limits.max_connections} "
            "connections in requests (--max-connections); retry shortly"))
        self.transport.close()

    def arm(self, seconds: float, callback) -> None:
        self.disarm()
        self.deadline = self.loop.call_later(seconds, callback)

    def disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def data_received(self, data: bytes) -> None:
        self.heard = True
        super().data_received(data)
        self.follow()

    def handle_events(self) -> None:
        super().handle_events()
        self.follow()

    def follow(self) -> None:
        """Re-arm the deadline when a request's head, or its whole body, has arrived."""
        if self.transport.is_closing() or self.cycle is None:
            return
        if self.cycle is not self.seen_cycle and self.in_request():
            self.seen_cycle = self.cycle
            if self.conn.their_state is SEND_BODY:
                self.arm(self.limits.body_timeout, self.body_expired)
            else:
                self.disarm()
        elif self.deadline is not None and self.in_request() \
                and self.conn.their_state is not SEND_BODY:
            self.disarm()  # the body is in: the route's own --timeout rules now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.in_request():
            self.ready_since = time.monotonic()
            self.heard = bool(self.conn.trailing_data[0])
            self.arm(self.limits.header_timeout, self.head_expired)

    def head_expired(self) -> None:
        self.deadline = None
        if self.transport.is_closing() or self.in_request():
            return
        if self.heard:  # a partial head: say why before closing
            self.transport.write(raw_json_response(
                408, "Request Timeout", "the request's head did not arrive within the "
                f"server's {self.limits.header_timeout:g} s (--header-timeout)"))
        self.transport.close()

    def body_expired(self) -> None:
        self.deadline = None
        if not self.transport.is_closing() and self.conn.their_state is SEND_BODY:
            self.transport.close()

    def eof_received(self) -> bool | None:
        # The client half-closed: a request read whole still gets its answer (then the
        # connection closes); anything else ends here.
        if self.in_request() and self.conn.their_state is not SEND_BODY:
            self.cycle.keep_alive = False
            return True
        return None


def guarded_protocol(limits: ConnectionLimits):
    """An HTTP protocol class for `uvicorn.Config(http=...)`: uvicorn's h11 protocol with the
    deadlines and connection bound of `limits` (one registry per class, so per server)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Guarded(ConnectionGuard, H11Protocol):
        pass

    Guarded.limits = limits
    Guarded.registry = {}  # open connections, oldest first
    return Guarded


class Workers:
    """A fixed number of daemon threads that run request work, awaited with a deadline.

        workers = Workers(2)
        result = await workers.run(30.0, work, runner, body)  # TimeoutError after 30 s
    """

    def __init__(self, count: int):
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(count):
            threading.Thread(target=self._serve, name=f"edgekit-worker-{i}",
                             daemon=True).start()

    def _serve(self) -> None:
        while True:
            future, loop, fn, args = self.jobs.get()
            if future.cancelled():  # its request gave up while it waited: drop it
                continue
            try:
                result, error = fn(*args), None
            except BaseException as e:  # noqa: BLE001 - handed to the waiting request
                result, error = None, e
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop has closed: the server is stopping
                return

    async def run(self, seconds: float | None, fn, *args):
        """fn(*args) in a worker thread; its result or exception.

        Raises:
            TimeoutError: it had not finished within `seconds` (queue time included); a job
                not yet started is dropped, a running one finishes in its thread.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.jobs.put((future, loop, fn, args))
        try:
            return await asyncio.wait_for(asyncio.shield(future), seconds)
        finally:
            future.cancel()  # no-op once settled; otherwise a queued job is skipped


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
