"""`edgekit serve` as a user meets it: a real server process on loopback, real HTTP requests.

Every bad request gets its status and a one-line JSON error, and the server answers the next
good request. Slow requests are made deterministic with bodies that arrive in two parts.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from edgekit.benchmark.loadtest import load_test, served
from edgekit.cli import main
from edgekit.runtime import load
from edgekit.runtime.serve import bind, is_loopback

pytestmark = pytest.mark.slow  # uses tiny_run; starts servers
MAX_BODY = 100_000


@pytest.fixture(scope="module")
def artifact(tiny_run) -> Path:
    return tiny_run / "export" / "model.int8.onnx"


@pytest.fixture(scope="module")
def png(tiny_run) -> bytes:
    return (tiny_run / "sample.png").read_bytes()


@pytest.fixture(scope="module")
def server(artifact):
    # --max-batch 8: the batcher (with a model thread per lane) under test; an ONNX model's
    # default runs each request on its own worker (test below)
    with served(artifact, "--max-body", str(MAX_BODY), "-k", "3", "--max-batch", "8") as s:
        yield s
    assert "stopped after" in s.stderr[-1]  # SIGTERM at the end: a clean stop, exit 0


def request(url: str, method: str, path: str, body=None, headers=None, chunked=False):
    """(status, parsed JSON body) of one request on a fresh connection."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body, headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        conn.close()


def still_serving(url: str, png: bytes) -> None:
    status, body = request(url, "POST", "/predict", png, {"Content-Type": "image/png"})
    assert status == 200 and "label" in body, body


def open_partial(url: str, headers: dict, part: bytes) -> socket.socket:
    """Send a POST /predict's headers and the first part of its body; the rest waits."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = "POST /predict HTTP/1.1\r\nHost: test\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(head.encode() + part)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    status, data = response.status, response.read()
    sock.close()
    return status, json.loads(data)


def wait_in_progress(url: str, count: int) -> int:
    """Until /health (which answers even when busy) shows `count` predictions in progress;
    how many /health requests that took."""
    end, polls = time.monotonic() + 20, 0
    while time.monotonic() < end:
        polls += 1
        if request(url, "GET", "/health")[1]["in_progress"] == count:
            return polls
        time.sleep(0.02)
    raise AssertionError(f"never saw {count} request(s) in progress")


# -- what a client sees when all is well ------------------------------------------------------

def test_health_and_metadata(server, artifact):
    status, health = request(server.url, "GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["artifact"] == artifact.name
    status, meta = request(server.url, "GET", "/metadata")
    embedded = load(artifact).manifest
    assert status == 200 and {k: meta[k] for k in embedded} == embedded  # the manifest itself
    assert meta["serving"]["backend"] == "onnxruntime"
    assert meta["serving"]["limits"]["max_body_bytes"] == MAX_BODY
    assert "image/*" in meta["serving"]["accepts"]
    assert request(server.url, "GET", "/")[1]["endpoints"]["POST /predict"]


@pytest.mark.parametrize("how", ["image/png", "octet-stream", "no content-type", "multipart",
                                 "multipart octet-stream"])
def test_predict_matches_the_runner(server, artifact, png, tiny_run, how):
    if how.startswith("multipart"):
        boundary = uuid.uuid4().hex
        part_type = "image/png" if how == "multipart" else "application/octet-stream"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"digit.png\"\r\nContent-Type: {part_type}\r\n\r\n").encode() \
            + png + f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    else:
        body = png
        headers = {"image/png": {"Content-Type": "image/png"},
                   "octet-stream": {"Content-Type": "application/octet-stream"},
                   "no content-type": {}}[how]
    status, result = request(server.url, "POST", "/predict?k=2", body, headers)
    assert status == 200, result
    want = load(artifact).predict(tiny_run / "sample.png", k=2)
    assert result["label"] == want["label"] and len(result["top"]) == 2
    assert result["probability"] == pytest.approx(want["probability"], abs=1e-6)
    assert result["artifact"] == artifact.name
    assert set(result["ms"]) == {"preprocess", "queue", "model"} and result["batch"] >= 1


def test_metrics_report_batches_and_times(server, png):
    """Concurrent requests go through the dynamic batcher; /metrics sums what it did."""
    from concurrent.futures import ThreadPoolExecutor

    before = request(server.url, "GET", "/metrics")[1]["batching"]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: request(server.url, "POST", "/predict", png,
                                                  {"Content-Type": "image/png"}), range(8)))
    assert all(status == 200 and 1 <= body["batch"] <= 8 for status, body in answers)
    status, metrics = request(server.url, "GET", "/metrics")
    batching = metrics["batching"]
    assert status == 200 and batching["max_batch"] == 8 and batching["max_wait_ms"] == 5
    assert batching["inputs"] - before["inputs"] == 8
    assert sum(int(size) * n for size, n in batching["batch_sizes"].items()) == \
        batching["inputs"]
    for key in ("queue_ms", "model_ms", "decode_ms"):
        assert set(batching[key]) == {"count", "p50", "p90", "p99", "max"}


def test_onnx_on_the_cpu_serves_a_request_per_worker_one_per_core(artifact, png):
    """By default an ONNX model on the CPU runs in lanes: a worker per core decodes and runs
    its own request on one thread (no batcher); --threads 2 gives each worker two cores."""
    from edgekit.machine import usable_cores

    cores = usable_cores()
    if cores < 2:
        pytest.skip("one usable core: one lane, the batcher's defaults")
    with served(artifact) as s:
        status, body = request(s.url, "POST", "/predict", png, {"Content-Type": "image/png"})
        metrics = request(s.url, "GET", "/metrics")[1]
    start = next(line for line in s.stderr if line.startswith("edgekit serve:"))
    assert status == 200 and "batch" not in body and metrics["batching"] is None
    assert f"(onnxruntime, cpu, {cores} worker(s), 1 model thread(s), batches of up to 1)" \
        in start, start
    # One lane: the batcher with every core. No request: served() sends SIGTERM right after the
    # start line, which must stop it (it once was swallowed before uvicorn's handlers were in).
    with served(artifact, "--threads", str(cores)) as s:
        start = next(line for line in s.stderr if line.startswith("edgekit serve:"))
    assert f"2 worker(s), {cores} model thread(s), batches of up to 8)" in start, start


def test_default_k_comes_from_the_command_line(server, png):
    assert len(request(server.url, "POST", "/predict", png, {"Content-Type": "image/png"})[1][
        "top"]) == 3


# -- every bad request: its status, one line of JSON, and the server goes on ------------------

def multipart_without_file() -> tuple[bytes, dict]:
    body = b"--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--b--\r\n"
    return body, {"Content-Type": "multipart/form-data; boundary=b"}


@pytest.mark.parametrize("case, status, message", [
    ("text declared as png", 400,
     "body (declared image/png) is not an image Pillow can read (PNG, JPEG, ...): unknown format"),
    ("empty body", 400, "body (declared image/png) is empty; expected an image"),
    ("truncated png", 400, "body (declared image/png) is not an image Pillow can read"),
    ("json body", 415, "POST /predict takes image/*, application/octet-stream, "
                       "multipart/form-data for model.int8.onnx (image input); got "
                       "application/json"),
    ("text/plain body", 415, "got text/plain"),
    ("declared too large", 413, f"request body of {MAX_BODY + 1} bytes is over the server's "
                                f"limit of {MAX_BODY} bytes (--max-body)"),
    ("streamed too large", 413, f"request body is over the server's limit of {MAX_BODY} bytes"),
    ("multipart without a file", 400, "multipart/form-data body has no file part"),
    ("multipart without its boundary", 400, "Missing boundary in multipart"),
    ("k is not a number", 400, "k='two'; expected a positive integer"),
    ("k is zero", 400, "k='0'; expected a positive integer"),
    ("unknown path", 404, "Not Found"),
    ("GET /predict", 405, "Method Not Allowed"),
])
def test_bad_request(server, png, case, status, message):
    kw = {"method": "POST", "path": "/predict", "body": png,
          "headers": {"Content-Type": "image/png"}}
    if case == "text declared as png":
        kw["body"] = b"hello, I am text"
    elif case == "empty body":
        kw["body"] = b""
    elif case == "truncated png":
        kw["body"] = png[:len(png) // 2]
    elif case == "json body":
        kw.update(body=b'{"pixels": [1, 2, 3]}', headers={"Content-Type": "application/json"})
    elif case == "text/plain body":
        kw.update(body=b"7", headers={"Content-Type": "text/plain; charset=utf-8"})
    elif case == "declared too large":
        kw["body"] = b"\x00" * (MAX_BODY + 1)
    elif case == "streamed too large":  # chunked: no Content-Length to refuse up front
        kw.update(body=iter([b"\x00" * 40_000] * 4), chunked=True)
    elif case == "multipart without a file":
        kw["body"], kw["headers"] = multipart_without_file()
    elif case == "multipart without its boundary":
        kw["headers"] = {"Content-Type": "multipart/form-data"}
    elif case == "k is not a number":
        kw["path"] = "/predict?k=two"
    elif case == "k is zero":
        kw["path"] = "/predict?k=0"
    elif case == "unknown path":
        kw["path"] = "/predictions"
    elif case == "GET /predict":
        kw.update(method="GET", body=None)
    got, body = request(server.url, **kw)
    assert got == status, body
    assert body["status"] == status and "\n" not in body["error"]
    assert body["error"].startswith(message) if "got" not in message else message in body[
        "error"]
    still_serving(server.url, png)


@pytest.mark.parametrize("raw, status", [
    (b"GARBAGE\r\n\r\n", 400),  # not HTTP at all
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n", 400),
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",
     400),  # two framings: the request-smuggling shape
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n", 400),
    (b"POST /predict HTTP/1.1\r\n\r\n", 400),  # no Host
])
def test_malformed_http_gets_a_400_from_the_parser(server, png, raw, status):
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(raw)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(f"HTTP/1.1 {status} ".encode()), reply[:200]
    still_serving(server.url, png)


def test_health_counts_requests_and_errors(server):
    before = request(server.url, "GET", "/health")[1]
    request(server.url, "GET", "/nope")
    after = request(server.url, "GET", "/health")[1]
    assert after["requests"] == before["requests"] + 2  # the 404 and the first /health
    assert after["errors"] == before["errors"] + 1


# -- limits on time and concurrency, and shutdown ---------------------------------------------

def test_a_second_request_is_busy_while_the_first_is_in_progress(artifact, png):
    """--max-concurrent 1: a second prediction gets 503 while the first is in progress (a
    --timeout long enough that nothing races on a loaded machine); the first then finishes."""
    with served(artifact, "--max-concurrent", "1", "--timeout", "120") as s:
        slow = open_partial(s.url, {"Content-Type": "image/png",
                                    "Content-Length": str(len(png))}, png[:100])
        wait_in_progress(s.url, 1)
        status, body = request(s.url, "POST", "/predict", png, {"Content-Type": "image/png"})
        assert status == 503 and body["error"].startswith(
            "the server is busy: 1 request(s) in progress (--max-concurrent)")
        assert request(s.url, "GET", "/metadata")[0] == 200  # cheap endpoints still answer
        slow.sendall(png[100:])
        status, body = read_response(slow)
        assert status == 200 and "label" in body, body
        still_serving(s.url, png)


def test_a_request_whose_body_never_finishes_gets_504_after_the_timeout(artifact, png):
    with served(artifact, "--max-concurrent", "1", "--timeout", "1") as s:
        slow = open_partial(s.url, {"Content-Type": "image/png",
                                    "Content-Length": str(len(png))}, png[:100])
        status, body = read_response(slow)
        assert status == 504 and body["error"] == ("the request took longer than the server's "
                                                   "--timeout 1 s")
        still_serving(s.url, png)


def test_sigterm_lets_a_request_in_progress_finish(artifact, png):
    with served(artifact) as s:
        half = len(png) // 2
        slow = open_partial(s.url, {"Content-Type": "image/png",
                                    "Content-Length": str(len(png))}, png[:half])
        polls = wait_in_progress(s.url, 1)
        s.proc.terminate()  # SIGTERM while the request waits for the rest of its body
        time.sleep(0.3)
        slow.sendall(png[half:])
        status, body = read_response(slow)
        assert status == 200 and "label" in body
        assert s.proc.wait(timeout=30) == 0
    assert s.stderr[-1].startswith(f"edgekit serve: stopped after {polls + 1} request(s)")


def test_short_load(server, png):
    """The short version of the benchmark's load test: 8 clients, bounded, zero errors."""
    report = load_test(server.url, png, "image/png", clients=8, requests=160, deadline=60)
    assert report["errors"] == 0, report["error_samples"]
    assert report["requests"] == 160 and not report["stopped_by_deadline"]
    print(f"\nserve load (short): {report['requests']} requests from 8 clients, "
          f"{report['requests_per_s']:.0f} req/s, p50 {report['p50_ms']:.2f} ms, "
          f"p99 {report['p99_ms']:.2f} ms")


# -- start-up failures: one line, exit 1 ------------------------------------------------------

def serve_fails(*args) -> str:
    result = CliRunner().invoke(main, ["serve", *map(str, args)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_port_in_use(artifact):
    taken = bind("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        assert serve_fails(artifact, "--port", port) == (
            f"error: port {port} on 127.0.0.1 is in use; choose another --port")
    finally:
        taken.close()
    assert "does not resolve" in serve_fails(artifact, "--host", "no-such-host.invalid")


def test_serve_refuses_a_damaged_or_bare_model(tiny_run, tmp_path):
    onnx = pytest.importorskip("onnx")
    export = tmp_path / "export"
    export.mkdir()
    for name in ("model.onnx", "manifest.json"):
        (export / name).write_bytes((tiny_run / "export" / name).read_bytes())
    data = bytearray((export / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 1
    (export / "model.onnx").write_bytes(bytes(data))
    assert "does not match the sha256 in manifest.json" in serve_fails(export / "model.onnx")
    proto = onnx.load(tiny_run / "export" / "model.onnx")
    del proto.metadata_props[:]
    onnx.save(proto, tmp_path / "bare.onnx")
    assert "carries no edgekit manifest" in serve_fails(tmp_path / "bare.onnx")


def test_loopback_is_the_default_and_others_are_flagged():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.8.9.10")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20")
    assert not is_loopback("::")
    import inspect

    from edgekit.runtime.serve import serve

    host = next(p for p in main.commands["serve"].params if p.name == "host")
    assert host.default == "127.0.0.1" == inspect.signature(serve).parameters["host"].default
