"""An abuse run against `edgekit serve`: load, then every kind of bad request (loopback only).

    with served("model.int8.onnx") as server:
        report = abuse(server.url, png_bytes, "image/png")
    report["connection_errors"], report["wrong_status"], report["health"]

After a load test (`requests` requests from `clients` clients) come an empty body, bytes
that are not the model's input, a truncated input, a media type the model does not take,
garbage JSON, an unknown k, an unknown path and a 16 MB body sent `big_repeats` times through
Python's urllib (which sends the whole body before reading the answer). Each must get its 4xx
status as JSON, none may end in a connection error, and /health must answer 200 at the end.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from edgekit.benchmark.loadtest import load_test
from edgekit.errors import EdgekitError

BIG = 16 * 1024 * 1024


def bad_requests(good: bytes, content_type: str) -> list[tuple[str, str, str, bytes, str, set]]:
    """(case, method, path, body, content type, statuses it may get) for a model whose good
    input is `good` of `content_type`."""
    return [
        ("empty body", "POST", "/predict", b"", content_type, {400}),
        ("not the model's input", "POST", "/predict", b"\x00\x01 not an input " * 8,
         content_type, {400}),
        ("truncated input", "POST", "/predict", good[:len(good) // 2], content_type, {400}),
        ("a media type it does not take", "POST", "/predict", good, "application/x-unknown",
         {415}),
        ("garbage JSON", "POST", "/predict", b'{"nope": [1, 2', "application/json", {400, 415}),
        ("k that is not a number", "POST", "/predict?k=lots", good, content_type, {400}),
        ("unknown path", "GET", "/no/such/path", b"", "", {404}),
        ("GET on /predict", "GET", "/predict", b"", "", {405}),
    ]


def abuse(url: str, good: bytes, content_type: str, clients: int = 8, requests: int = 500,
          big_repeats: int = 5, big: int = BIG, timeout: float = 60.0) -> dict:
    """Load `url`'s server, then send every bad request; report what each got.

    Returns:
        {"load": load_test's report, "cases": [{"case", "status", "expected", "ok", "error"}],
         "connection_errors": n, "wrong_status": n, "health": status, "ok": bool}

    Raises:
        EdgekitError: `url` is not a loopback address.
    """
    host = urlsplit(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise EdgekitError(f"abuse targets this machine only (loopback); got {host!r}")
    load = load_test(url, good, content_type, clients=clients, requests=requests)
    cases = [(c, m, p, b, t, s) for c, m, p, b, t, s in bad_requests(good, content_type)]
    cases += [(f"{big // (1024 * 1024)} MB body via urllib ({i + 1})", "POST", "/predict",
               b"\0" * big, content_type, {413}) for i in range(big_repeats)]
    rows = []
    for case, method, path, body, ctype, expected in cases:
        status, error, t0 = None, None, time.perf_counter()
        try:
            status = send(url + path, method, body, ctype, timeout)
        except (OSError, http.client.HTTPException) as e:  # reset, refused, closed early
            error = f"{type(e).__name__}: {e}"
        rows.append({"case": case, "status": status, "expected": sorted(expected),
                     "ok": status in expected, "error": error,
                     "ms": round((time.perf_counter() - t0) * 1e3, 1)})
    try:
        health = send(url + "/health", "GET", b"", "", timeout)
    except (OSError, http.client.HTTPException):
        health = None
    connection_errors = load["errors"] + sum(r["error"] is not None for r in rows)
    wrong = sum(not r["ok"] for r in rows)
    return {"load": load, "cases": rows, "connection_errors": connection_errors,
            "wrong_status": wrong, "health": health,
            "ok": connection_errors == 0 and wrong == 0 and health == 200}


def send(url: str, method: str, body: bytes, content_type: str, timeout: float) -> int:
    """The HTTP status of one request made with urllib; the body must be the JSON error."""
    headers = {"Content-Type": content_type} if content_type else {}
    request = urllib.request.Request(url, data=body if method == "POST" else None,
                                     headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as e:
        data = e.read()
        if e.code != 404 and e.code != 405:  # Starlette's own plain-text 404/405
            json.loads(data)  # every edgekit error is JSON
        return e.code
