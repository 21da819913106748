"""Frames/s of `edgekit predict MODEL clip.mp4`, end to end, on a 640x480 clip (issue 27).

Writes a clip of FRAMES frames (640x480, MPEG-4 part 2 in .mp4, 30 frames/s: held-out digits
scaled up and drifting, so every frame differs), then for each ARTIFACT runs

    /usr/bin/time -v edgekit predict ARTIFACT clip.mp4 --json > /dev/null

and reports its closing line (frames read / predicted / dropped, frames/s end to end, the
model's share, decoding and preprocessing) and the peak RSS, with the CPU named.

    .venv/bin/python benchmarks/video_rate.py runs/demo/export/model.int8.onnx \\
        RESNET_RUN/export/model.int8.onnx [--frames 600] [--work /tmp/video-rate]

Writes WORK/video_rate.json. Needs the [video] extra (OpenCV).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np


def write_clip(path: Path, frames: int, fps: float = 30.0) -> Path:
    import cv2
    from sklearn.datasets import load_digits

    digits = load_digits().images  # (n, 8, 8) in 0..16
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    for i in range(frames):
        big = cv2.resize((digits[i // 10 % len(digits)] * 15).astype(np.uint8), (400, 400),
                         interpolation=cv2.INTER_LINEAR)
        frame = np.full((480, 640, 3), 40, np.uint8)
        x = 20 + (i * 3) % 200  # drifting: no two frames alike
        frame[40:440, x:x + 400] = big[:, :, None]
        writer.write(frame)
    writer.release()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--work", type=Path, default=Path("/tmp/video-rate"))
    args = ap.parse_args()
    from edgekit.machine import machine_info

    args.work.mkdir(parents=True, exist_ok=True)
    clip = write_clip(args.work / "clip.mp4", args.frames)
    results = []
    for artifact in args.artifacts:
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "edgekit", "predict", str(artifact),
               str(clip), "--json"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        closing = next(line for line in proc.stderr.splitlines() if line.startswith(str(clip)))
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)[1])
        results.append({"artifact": str(artifact), "closing_line": closing,
                        "peak_rss_mb": round(rss / 1024, 1)})
        print(f"{artifact}\n  {closing}\n  peak RSS {rss / 1024:.0f} MB")
    info = machine_info()
    print(f"CPU: {info['cpu']}, {info['usable_cores']} usable cores")
    (args.work / "video_rate.json").write_text(json.dumps(
        {"cpu": info["cpu"], "usable_cores": info["usable_cores"], "frames": args.frames,
         "clip": "640x480 mp4v 30 frames/s", "results": results}, indent=2))


if __name__ == "__main__":
    main()
