"""Does `edgekit serve` survive an abuse run, in bounded memory? (issues 19, 24)

Serves ARTIFACT (an image model, e.g. runs/demo/export/model.int8.onnx) on loopback and runs
edgekit.benchmark.abuse: 500 requests of GOOD from 8 clients, then an empty body, bytes that
are not an image, a truncated image, a media type the model does not take, garbage JSON, a bad
k, an unknown path and a 16 MB body from Python's urllib 5 times; then 4 pixel bombs at once
(a 12000x12000 PNG of about 140 KB) and 4 48-megapixel JPEGs at once. Reports every status,
the connection errors, /health at the end, and the server's peak RSS (VmHWM) after each stage.
Goal: zero connection errors, every bad request its 4xx, /health 200.

Issue 24: the whole abuse run above goes on while hostile clients hold the server: --idle
(1000) connections that never send a byte (re-opened as the server closes them), --slow (50)
slowloris clients sending a request head a byte every 0.5 s, and --half-closed (20) clients
that send a whole request and shut down their side at once (each must get its 200). All on
loopback, bounded in count and in time (the run's length).

    .venv/bin/python benchmarks/abuse_serve.py runs/demo/export/model.int8.onnx runs/demo/sample.png
"""

from __future__ import annotations

import argparse
import io
import json
import re
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from edgekit.benchmark.abuse import abuse, send
from edgekit.benchmark.loadtest import served
from edgekit.machine import machine_info


def peak_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return round(int(re.search(r"VmHWM:\s+(\d+)", status)[1]) / 1024, 1)


def images() -> tuple[bytes, bytes]:
    from PIL import Image

    bomb, photo = io.BytesIO(), io.BytesIO()
    Image.new("L", (12000, 12000)).save(bomb, "PNG")
    Image.new("RGB", (8000, 6000), (120, 60, 30)).save(photo, "JPEG")
    return bomb.getvalue(), photo.getvalue()


class Hostile:
    """Idle and slowloris connections held open (re-opened when the server closes them) in
    background threads until `stop()`: counts of what the server did to them."""

    def __init__(self, url: str, idle: int, slow: int):
        parts = urlsplit(url)
        self.address = (parts.hostname, parts.port)
        self.done = threading.Event()
        self.counts = {"idle_opened": 0, "idle_closed_by_server": 0, "slow_opened": 0,
                       "slow_408": 0, "slow_closed_by_server": 0, "refused": 0}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._idle, args=(idle,), daemon=True)]
        self.threads += [threading.Thread(target=self._slow, daemon=True) for _ in range(slow)]

    def count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def start(self) -> Hostile:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> dict:
        self.done.set()
        for t in self.threads:
            t.join(timeout=30)
        return self.counts

    def _open(self, key: str) -> socket.socket | None:
        try:
            s = socket.create_connection(self.address, timeout=5)
        except OSError:
            self.count("refused")
            return None
        self.count(key)
        return s

    def _idle(self, n: int) -> None:
        """n sockets that send nothing; one the server closed is counted and re-opened."""
        held = [s for s in (self._open("idle_opened") for _ in range(n)) if s]
        for s in held:
            s.setblocking(False)
        while not self.done.wait(0.5):
            for i, s in enumerate(held):
                try:
                    if s.recv(1) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    continue
                except OSError:
                    self.count("idle_closed_by_server")
                    s.close()
                    fresh = self._open("idle_opened")
                    if fresh:
                        fresh.setblocking(False)
                        held[i] = fresh
        for s in held:
            s.close()

    def _slow(self) -> None:
        """A request head a byte every 0.5 s, started again whenever the server ends it."""
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
        while not self.done.is_set():
            s = self._open("slow_opened")
            if s is None:
                self.done.wait(0.5)
                continue
            try:
                for byte in head:
                    if self.done.wait(0.5):
                        break
                    s.sendall(bytes([byte]))
            except OSError:  # the server closed it: did it say 408 first?
                try:
                    answer = s.recv(200)
                except OSError:
                    answer = b""
                self.count("slow_408" if answer.startswith(b"HTTP/1.1 408") else
                           "slow_closed_by_server")
            finally:
                s.close()


def half_closed(url: str, n: int, body: bytes, content_type: str) -> list[int | None]:
    """n clients that send a whole POST /predict and shut down their side: each status."""
    parts = urlsplit(url)

    def one(_) -> int | None:
        with socket.create_connection((parts.hostname, parts.port), timeout=60) as s:
            s.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}"
                      f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        try:
            return int(answer.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return None

    with ThreadPoolExecutor(max(1, min(n, 8))) as pool:
        return list(pool.map(one, range(n)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("good", type=Path, help="a good input (an image file)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/abuse_serve.json"))
    ap.add_argument("--idle", type=int, default=1000, help="idle connections held open")
    ap.add_argument("--slow", type=int, default=50, help="slowloris clients")
    ap.add_argument("--half-closed", type=int, default=20, help="half-closing clients")
    ap.add_argument("--hold", type=float, default=25.0,
                    help="seconds the idle and slow clients stay at least (bounded run)")
    args = ap.parse_args()
    good = args.good.read_bytes()
    bomb, photo = images()
    with served(args.artifact) as server:
        pid = server.proc.pid
        started = peak_mb(pid)
        hostile = Hostile(server.url, args.idle, args.slow).start()
        began = time.monotonic()
        time.sleep(2)  # the idle connections are open before the load starts
        health_under_idle = send(server.url + "/health", "GET", b"", "", 30)
        report = abuse(server.url, good, "image/png")
        halves = half_closed(server.url, args.half_closed, good, "image/png")
        # past the server's header deadline (10 s), so that slowloris heads are cut meanwhile
        time.sleep(max(0.0, args.hold - (time.monotonic() - began)))
        health_at_end_of_hold = send(server.url + "/health", "GET", b"", "", 30)
        hostile_counts = hostile.stop()
        held_s = round(time.monotonic() - began, 1)
        after_abuse = peak_mb(pid)
        with ThreadPoolExecutor(4) as pool:
            bombs = list(pool.map(lambda _: send(server.url + "/predict", "POST", bomb,
                                                 "image/png", 60), range(4)))
        after_bombs = peak_mb(pid)
        with ThreadPoolExecutor(4) as pool:
            photos = list(pool.map(lambda _: send(server.url + "/predict", "POST", photo,
                                                  "image/jpeg", 60), range(4)))
        after_photos = peak_mb(pid)
        health = send(server.url + "/health", "GET", b"", "", 10)
    result = {
        "artifact": str(args.artifact), "cpu": machine_info().get("cpu"),
        "hostile": {"idle": args.idle, "slow": args.slow, **hostile_counts,
                    "held_s": held_s, "health_with_idle_open": health_under_idle,
                    "health_at_end_of_hold": health_at_end_of_hold,
                    "half_closed_statuses": halves},
        "load": {k: report["load"].get(k) for k in ("requests", "errors", "clients",
                                                    "requests_per_s", "p50_ms", "p99_ms")},
        "cases": [{k: c[k] for k in ("case", "status", "expected", "ok", "error")}
                  for c in report["cases"]],
        "connection_errors": report["connection_errors"], "wrong_status": report["wrong_status"],
        "pixel_bombs_4_at_once": bombs, "jpeg_48mp_4_at_once": photos, "health": health,
        "server_peak_rss_mb": {"started": started, "after_abuse": after_abuse,
                               "after_4_bombs": after_bombs, "after_4_jpegs": after_photos},
        "ok": report["ok"] and health == 200 and bombs == [400] * 4 and photos == [200] * 4
        and health_under_idle == health_at_end_of_hold == 200
        and halves == [200] * args.half_closed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
