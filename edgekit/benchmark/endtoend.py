"""`edgekit bench ARTIFACT --photos DIR`: photos in, labels out, against the model alone.

What a user waits for is not `Runner.run` on prepared arrays but decoding, resizing and
normalizing each photo too. One run measures both, on the same photos and the same runner:

    model only   Runner.run on the prepared photos, batch 1 and batch B (the upper bound)
    prepare      one photo decoded and prepared, in one thread (exact and fast paths)
    end to end   predict_files over the photo files, batch B, decoders beside the model
                 or lanes that each decode and run a batch (what `edgekit predict DIR
                 --batch B` does), with the share of its wall time the model ran and the
                 decoders' time

    report = end_to_end("model.int8.onnx", sorted(Path("photos").glob("*.jpg")), batch=32)
    report["end_to_end"]["share_of_model_only"]   # e.g. 0.81

`photos_like(folder, n)` writes random but photo-like JPEGs (smooth gradients and blobs plus
sensor-like noise, quality 90) for a benchmark that needs no camera.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError


def photos_like(folder: Path, n: int = 256, size: tuple[int, int] = (640, 480),
                quality: int = 90, seed: int = 0) -> list[Path]:
    """Write `n` photo-like JPEGs of `size` (width, height) into `folder`; their paths."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    paths = []
    for i in range(n):
        a, b, c = rng.uniform(-1, 1, (3, 3))  # (3 channels, 3 gradient terms)
        img = 128 + 100 * (a[:, None, None] * xx / w + b[:, None, None] * yy / h) \
            * c[:, None, None]  # (3, H, W) a smooth gradient per channel
        for _ in range(3):  # soft blobs: objects out of focus
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(20, 160)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
            img += rng.uniform(-90, 90, 3)[:, None, None] * blob
        img += rng.normal(0, 6, img.shape)  # sensor noise
        rgb = np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0)  # (H, W, 3)
        path = folder / f"photo-{i:04d}.jpg"
        Image.fromarray(rgb, "RGB").save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths


def _rate(fn, count: int, seconds: float) -> tuple[float, list[float]]:
    """Call fn() (which handles `count` inputs) until `seconds` pass, at least 3 times:
    (inputs per second over all calls, each call's seconds)."""
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return count * len(times) / sum(times), times


def end_to_end(artifact: str | Path, photos: list[Path], batch: int = 32,
               threads: int | None = None, seconds: float = 3.0,
               exact_preprocessing: bool = False) -> dict:
    """Model-only rates and the photos-in-labels-out rate of `artifact` on `photos`.

    The model alone is timed one call at a time on all cores (`threads`) and in lanes
    (edgekit.runtime.batch.lanes_for); the end-to-end rate is measured against the better.

    Args:
        seconds: time budget of each model-only measurement.
        exact_preprocessing: prepare photos exactly as training did, even where the export
            allowed the fast path.

    Returns:
        {"artifact", "photos", "batch", "threads", "fast_path", "model_only":
         {"batch1_per_s", "batch1_p50_ms", "batchB_per_s", "lanes", "batch1_lanes_per_s",
          "batchB_lanes_per_s", "best_batch1_per_s", "best_batchB_per_s"}, "prepare_ms"
         (p50, one thread), "end_to_end": {"per_s", "share_of_model_only", "seconds",
         "model_share", "prepare_core_seconds", "decoders", "lanes"}}

    Raises:
        EdgekitError: no photos, or an artifact or photo edgekit cannot read.
    """
    from concurrent.futures import ThreadPoolExecutor

    from edgekit.runtime import load
    from edgekit.runtime.batch import decode_workers, lanes_for, predict_files
    from edgekit.runtime.preprocess.image import fast_path
    from edgekit.runtime.throughput import Throughput

    if not photos:
        raise EdgekitError("no photos to time: give a folder of images")
    runner = load(artifact, threads=threads)
    per_lane, lanes = lanes_for(artifact, threads)
    laned = load(artifact, threads=per_lane) if lanes > 1 else runner
    for r in {runner, laned}:
        r.exact_preprocessing, r.check_finite = exact_preprocessing, False
    prepare_times, xs = [], []
    for p in photos:
        t0 = time.perf_counter()
        xs.append(runner.prepare(p))
        prepare_times.append(time.perf_counter() - t0)
    x = np.stack(xs)  # (N, C, H, W)
    runner.run(x[:batch])  # warm-up: first-run allocations
    laned.run(x[:batch])
    chunks = [x[i:i + batch] for i in range(0, len(x) - batch + 1, batch)] or [x]  # whole
    ones = [x[i % len(x)][None] for i in range(32)]  # (1, C, H, W) each
    rate_b, _ = _rate(lambda: [runner.run(c) for c in chunks], sum(map(len, chunks)), seconds)
    rate_1, times_1 = _rate(lambda: [runner.run(one) for one in ones], 32, seconds)
    lane_b = lane_1 = None
    if lanes > 1:
        with ThreadPoolExecutor(lanes) as pool:
            lane_b, _ = _rate(lambda: list(pool.map(laned.run, chunks)),
                              sum(map(len, chunks)), seconds)
            lane_1, _ = _rate(lambda: list(pool.map(laned.run, ones)), 32, seconds)
    best_b, best_1 = max(rate_b, lane_b or 0), max(rate_1, lane_1 or 0)
    stats = Throughput(batch)
    workers = decode_workers(threads)
    for _ in predict_files(laned, list(photos), batch, 1, stats=stats, workers=workers,
                           lanes=lanes):
        pass
    per_s = stats.inputs / stats.seconds
    return {
        "artifact": str(artifact), "photos": len(photos), "batch": batch, "threads": threads,
        "fast_path": fast_path(runner.preprocess_spec()),  # "opencv", "pillow" or None
        "model_only": {"batch1_per_s": round(rate_1, 2),
                       "batch1_p50_ms": round(float(np.median(times_1)) / 32 * 1e3, 3),
                       f"batch{batch}_per_s": round(rate_b, 2), "lanes": lanes,
                       "batch1_lanes_per_s": lane_1 and round(lane_1, 2),
                       f"batch{batch}_lanes_per_s": lane_b and round(lane_b, 2),
                       "best_batch1_per_s": round(best_1, 2),
                       f"best_batch{batch}_per_s": round(best_b, 2)},
        "prepare_ms": round(float(np.median(prepare_times)) * 1e3, 3),
        "end_to_end": {"per_s": round(per_s, 2),
                       "share_of_model_only": round(per_s / best_b, 4),
                       "seconds": round(stats.seconds, 3),
                       "model_share": round(stats.infer_seconds / stats.seconds, 4),
                       "prepare_core_seconds": round(stats.prepare_seconds, 3),
                       "decoders": lanes if lanes > 1 else workers, "lanes": lanes},
    }


def format_end_to_end(report: dict) -> str:
    """The report as a few lines for people."""
    m, e, b = report["model_only"], report["end_to_end"], report["batch"]
    path = (f"fast path ({report['fast_path']} resize; export allowed it)"
            if report["fast_path"] else "exact path")
    return "\n".join([
        f"{Path(report['artifact']).name}: {report['photos']} photos, batch {b}, "
        f"preprocessing: {path}",
        f"  model only:  batch 1 {m['batch1_per_s']:.1f}/s ({m['batch1_p50_ms']:.2f} ms), "
        f"batch {b} {m[f'batch{b}_per_s']:.1f}/s" + (
            f"; in {m['lanes']} lanes: batch 1 {m['batch1_lanes_per_s']:.1f}/s, batch {b} "
            f"{m[f'batch{b}_lanes_per_s']:.1f}/s" if m["lanes"] > 1 else ""),
        f"  prepare one photo (one thread): {report['prepare_ms']:.2f} ms",
        f"  photos in, labels out: {e['per_s']:.1f}/s = {e['share_of_model_only']:.0%} of "
        f"the best model-only batch {b}; the model ran {e['model_share']:.0%} of the wall "
        f"time, {e['decoders']} decoder(s) spent {e['prepare_core_seconds']:.2f} s"])


def run_end_to_end(artifacts: list, folder: Path, batch: int, threads: int | None,
                   seconds: float, as_json: bool) -> str:
    """`edgekit bench ARTIFACT --photos DIR`: the report as text (JSON with `as_json`).

    Raises:
        EdgekitError: not exactly one artifact file, or a folder without images.
    """
    from edgekit.fileio import json_text
    from edgekit.runtime import load
    from edgekit.runtime.batch import expand_inputs

    if len(artifacts) != 1 or not Path(artifacts[0]).is_file():
        raise EdgekitError(f"--photos times one artifact file; got {len(artifacts)} "
                           f"argument(s): {', '.join(map(str, artifacts))}")
    photos = expand_inputs([folder], load(artifacts[0]))
    report = end_to_end(artifacts[0], photos, batch, threads, seconds)
    return json_text(report).rstrip() if as_json else format_end_to_end(report)
