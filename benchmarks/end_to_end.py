"""Photos in, labels out, as fast as the model allows? (issue 27's "Done when", one run)

Trains a model briefly with edgekit's own recipe (resnet18 by default: 1 epoch on the
offline digits at 224 px; accuracy does not change speed), exports int8 ONNX (the export
measures the fast image path and records its verdict), writes PHOTOS random but photo-like
640x480 JPEGs (quality 90), then measures in one run, on this machine:

    model only    Runner.run on the prepared photos: batch 1 and batch 32
    prepare       one photo, exact path and fast path (one thread)
    predict DIR   `edgekit predict DIR --batch 32 --json` (its own closing line: first decode
                  to last result) and the process's wall clock, fast and exact paths
    serve         `edgekit serve` with 4 concurrent clients POSTing the photos (keep-alive),
                  fast and exact paths, and the server's /metrics (batch sizes, queue time)

Goals: predict DIR >= 75% of model-only batch 32; serve >= 70% of model-only batch 1.
The machines are shared and a 256-photo run lasts about 2 s, so each path runs REPEATS rounds
of (model only, predict DIR, serve) and each round's shares are against its own model-only
rates: the table gives medians, the JSON every round.

    .venv/bin/python benchmarks/end_to_end.py [--models resnet18,mobilenet_v2]
        [--work /tmp/edgekit-e2e] [--out benchmarks/results/DATE-CPU]

Writes OUT/end_to_end.json and OUT/end_to_end.md (the figures, the commands and the CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"resnet18": ["train.epochs=1", "data.image_size=224"],
           "mobilenet_v2": ["train.epochs=1", "data.image_size=224"]}
BATCH = 32
CLIENTS = 4
REPEATS = 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgekit-e2e"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--photos", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--before", type=Path, default=None, metavar="SRC",
                    help="a source tree of edgekit before this work (git archive of a commit): "
                         "its predict and serve are measured in the same run, for the table")
    args = ap.parse_args()
    from edgekit.benchmark.endtoend import photos_like
    from edgekit.machine import machine_info

    machine = machine_info()
    photos = sorted((args.work / "photos").glob("*.jpg"))
    if len(photos) != args.photos:
        photos = photos_like(args.work / "photos", args.photos)
    results = {"machine": machine, "photos": len(photos), "photo_size": [640, 480],
               "jpeg_quality": 90, "batch": BATCH, "clients": CLIENTS, "models": {}}
    for name in args.models.split(","):
        artifact = trained(name, args.work)
        results["models"][name] = measure(artifact, photos, args.work / "photos", args.seconds,
                                          args.before)
        print(json.dumps(results["models"][name], indent=1), flush=True)
    cpu = re.sub(r"[^a-z0-9]+", "-", machine.get("cpu", "cpu").lower()).strip("-")[:40]
    out = args.out or ROOT / "benchmarks" / "results" / f"{time.strftime('%Y-%m-%d')}-{cpu}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "end_to_end.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "end_to_end.md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {out}/end_to_end.json, end_to_end.md")


def edgekit(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], check=True,
                          capture_output=True, text=True, **kw)


def source_env(src: Path | None) -> dict | None:
    """The environment that runs edgekit from source tree `src` (None: this one)."""
    import os

    # PYTHONSAFEPATH: `python -m` would put the working directory (this checkout) first
    return None if src is None else {**os.environ, "PYTHONPATH": str(src), "PYTHONSAFEPATH": "1"}


def trained(name: str, work: Path) -> Path:
    """The run's int8 ONNX, trained and exported once (kept in WORK between runs)."""
    run = work / name
    artifact = run / "export" / "model.int8.onnx"
    if not artifact.is_file():
        sets = [a for s in RECIPES[name] for a in ("--set", s)]
        edgekit("train", name, *sets, "--out", run, "--no-progress")
        edgekit("export", run, "--onnx", "--int8")
    return artifact


def measure(artifact: Path, photos: list[Path], folder: Path, seconds: float,
            before: Path | None = None) -> dict:
    """Each path REPEATS rounds of: model only (in process), `predict DIR`, a serve round.

    A round's shares are its own rates against its own model-only rates, measured seconds
    apart: the machine's drift between rounds (shared machines) cancels; the medians go into
    the table and every round into the JSON.
    """
    import statistics

    from edgekit.benchmark.endtoend import end_to_end

    report = json.loads((artifact.parent / "report.json").read_text())
    out = {"artifact": str(artifact), "fast_verdict": report.get("fast_preprocessing")}
    bodies = [p.read_bytes() for p in photos]
    if before is not None:  # the same photos through the code before this work
        with served_for(artifact, False, bodies, before) as url:
            out["before"] = {"source": str(before),
                             "predict_cli": [predict_cli(artifact, folder, False, before)
                                             for _ in range(REPEATS)],
                             "serve": [serve_round(url, bodies) for _ in range(REPEATS)]}
    for path, exact in (("fast", False), ("exact", True)):
        rounds = []
        with served_for(artifact, exact, bodies) as url:
            for _ in range(REPEATS):
                e2e = end_to_end(artifact, photos, BATCH, None, seconds,
                                 exact_preprocessing=exact)
                model = e2e["model_only"]
                p, sv = predict_cli(artifact, folder, exact), serve_round(url, bodies)
                rounds.append({"in_process": e2e, "predict_cli": p, "serve": sv, "goals": {
                    "predict_share_of_model_only_batch32":
                        round(p["per_s"] / model[f"best_batch{BATCH}_per_s"], 4),
                    "serve_share_of_model_only_batch1":
                        round(sv["requests_per_s"] / model["best_batch1_per_s"], 4)}})
            metrics = get_metrics(url)
        median = {key: statistics.median(r["goals"][key] for r in rounds)
                  for key in rounds[0]["goals"]}
        out[path] = {"rounds": rounds, "metrics": metrics, "goals": median,
                     "model_only": {k: statistics.median(r["in_process"]["model_only"][k]
                                                         for r in rounds)
                                    for k in ("best_batch1_per_s", f"best_batch{BATCH}_per_s")},
                     "prepare_ms": statistics.median(r["in_process"]["prepare_ms"]
                                                     for r in rounds),
                     "fast_path": rounds[0]["in_process"]["fast_path"],
                     "predict_per_s": statistics.median(r["predict_cli"]["per_s"] for r in rounds),
                     "serve_per_s": statistics.median(r["serve"]["requests_per_s"]
                                                      for r in rounds)}
    return out


def predict_cli(artifact: Path, folder: Path, exact: bool, src: Path | None = None) -> dict:
    """`edgekit predict DIR --batch 32 --json`: its closing line's rate, and the wall clock."""
    flags = ["--exact-preprocessing"] if exact else []
    t0 = time.perf_counter()
    proc = edgekit("predict", artifact, folder, "--batch", BATCH, "--json", *flags,
                   env=source_env(src))
    wall = time.perf_counter() - t0
    line = proc.stderr.strip().splitlines()[-1]
    rate = float(re.search(r"([\d.]+) inputs/s end to end", line)[1])
    count = len(proc.stdout.splitlines())
    return {"per_s": rate, "line": line, "outputs": count, "process_wall_s": round(wall, 3),
            "process_per_s": round(count / wall, 2)}


@contextlib.contextmanager
def served_for(artifact: Path, exact: bool, bodies: list[bytes], src: Path | None = None):
    """`edgekit serve ARTIFACT` running (warmed up with 32 requests): its URL."""
    from edgekit.benchmark.loadtest import load_test, served

    flags = ["--exact-preprocessing"] if exact else []
    with served(artifact, *flags, env=source_env(src)) as s:
        load_test(s.url, bodies[:16], "image/jpeg", clients=CLIENTS, requests=32)
        yield s.url


def serve_round(url: str, bodies: list[bytes]) -> dict:
    """CLIENTS keep-alive clients POSTing every photo once."""
    from edgekit.benchmark.loadtest import load_test

    report = load_test(url, bodies, "image/jpeg", clients=CLIENTS, requests=len(bodies),
                       deadline=300)
    return {k: report[k] for k in ("requests", "errors", "requests_per_s", "p50_ms", "p99_ms")}


def get_metrics(url: str) -> dict | None:
    """The server's /metrics (batch sizes, queue time); None from code without it (404)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    metrics = json.loads(response.read()) if response.status == 200 else None
    conn.close()
    return metrics


def markdown(results: dict) -> str:
    import statistics

    from edgekit.machine import cpu_label

    m = results["machine"]
    lines = [f"# Photos in, labels out ({time.strftime('%Y-%m-%d')})", "",
             f"CPU: {cpu_label(m)}, {m.get('cores', '?')} cores; {results['photos']} JPEG "
             f"photos 640x480 q90; int8 ONNX, 3x224x224, onnxruntime, all cores. Model only: the "
             "better of one call at a time on every core and concurrent 1-thread calls (lanes). "
             f"Each path ran {REPEATS} rounds of model only, predict DIR and a serve round; "
             "rates are medians, shares the median of each round's own share (every round is in "
             "the JSON).",
             "",
             "| model | path | model only b1 /s | model only b32 /s | prepare ms | predict DIR "
             "/s (share of b32) | serve 4 clients /s (share of b1) | serve mean batch |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    notes = []
    for name, r in results["models"].items():
        for path in ("exact", "fast"):
            e, g, mo = r[path], r[path]["goals"], r[path]["model_only"]
            batching = (e.get("metrics") or {}).get("batching") or {}
            label = f"fast ({e['fast_path']} resize)" if e.get("fast_path") else path
            lines.append(
                f"| {name} | {label} | {mo['best_batch1_per_s']:.0f} | "
                f"{mo[f'best_batch{BATCH}_per_s']:.0f} | {e['prepare_ms']:.2f} | "
                f"{e['predict_per_s']:.0f} ({g['predict_share_of_model_only_batch32']:.0%}) | "
                f"{e['serve_per_s']:.0f} ({g['serve_share_of_model_only_batch1']:.0%}) | "
                f"{batching.get('mean_batch') or '- (a request per worker)'} |")
        before = r.get("before")
        if before:  # against the exact path's model-only medians, measured in the same run
            mo = r["exact"]["model_only"]
            b1, bb = mo["best_batch1_per_s"], mo[f"best_batch{BATCH}_per_s"]
            p = statistics.median(x["per_s"] for x in before["predict_cli"])
            sv = statistics.median(x["requests_per_s"] for x in before["serve"])
            lines.append(f"| {name} | before (exact, 1 decoder, no batching) | {b1:.0f} | "
                         f"{bb:.0f} | | {p:.0f} ({p / bb:.0%}) | {sv:.0f} ({sv / b1:.0%}) | - |")
        v = r.get("fast_verdict") or {}
        if v:  # after the table, which a paragraph would cut in two
            notes += ["", f"{name}: the export allowed the fast path: {v['allowed']} "
                          f"({v['drop_points']:+.2f} points, top-1 agreement "
                          f"{v.get('top1_agreement', 0):.2%}, max pixel diff "
                          f"{v['max_pixel_diff']:.0f}/255 on {v['samples']} held-out images)."]
            cv = v.get("opencv")
            if cv:
                notes[-1] += (f" With OpenCV's resize: {cv['allowed']} ({cv['drop_points']:+.2f}"
                              f" points, top-1 agreement {cv.get('top1_agreement', 0):.2%}, max "
                              f"pixel diff {cv['max_pixel_diff']:.0f}/255).")
    return "\n".join(lines + notes) + "\n"


if __name__ == "__main__":
    main()
