"""Does `edgekit serve` survive an abuse run, in bounded memory? (issue 19)

Serves ARTIFACT (an image model, e.g. runs/demo/export/model.int8.onnx) on loopback and runs
edgekit.benchmark.abuse: 500 requests of GOOD from 8 clients, then an empty body, bytes that
are not an image, a truncated image, a media type the model does not take, garbage JSON, a bad
k, an unknown path and a 16 MB body from Python's urllib 5 times; then 4 pixel bombs at once
(a 12000x12000 PNG of about 140 KB) and 4 48-megapixel JPEGs at once. Reports every status,
the connection errors, /health at the end, and the server's peak RSS (VmHWM) after each stage.
Goal: zero connection errors, every bad request its 4xx, /health 200.

    .venv/bin/python benchmarks/abuse_serve.py runs/demo/export/model.int8.onnx runs/demo/sample.png
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("good", type=Path, help="a good input (an image file)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/abuse_serve.json"))
    args = ap.parse_args()
    good = args.good.read_bytes()
    bomb, photo = images()
    with served(args.artifact) as server:
        pid = server.proc.pid
        started = peak_mb(pid)
        report = abuse(server.url, good, "image/png")
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
        "load": {k: report["load"].get(k) for k in ("requests", "errors", "clients",
                                                    "requests_per_s", "p50_ms", "p99_ms")},
        "cases": [{k: c[k] for k in ("case", "status", "expected", "ok", "error")}
                  for c in report["cases"]],
        "connection_errors": report["connection_errors"], "wrong_status": report["wrong_status"],
        "pixel_bombs_4_at_once": bombs, "jpeg_48mp_4_at_once": photos, "health": health,
        "server_peak_rss_mb": {"started": started, "after_abuse": after_abuse,
                               "after_4_bombs": after_bombs, "after_4_jpegs": after_photos},
        "ok": report["ok"] and health == 200 and bombs == [400] * 4 and photos == [200] * 4,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
