"""`edgekit bench ARTIFACT --photos DIR`: the model alone and photos in to labels out."""

from __future__ import annotations

import json

from conftest import edgekit
from PIL import Image

from edgekit.benchmark.endtoend import photos_like
from edgekit.runtime.batch import decode_workers, lanes_for


def test_photos_like_are_jpegs_of_the_asked_size(tmp_path):
    paths = photos_like(tmp_path / "p", n=3, size=(64, 48))
    assert [p.name for p in paths] == ["photo-0000.jpg", "photo-0001.jpg", "photo-0002.jpg"]
    with Image.open(paths[0]) as img:
        assert img.format == "JPEG" and img.size == (64, 48) and img.mode == "RGB"
    assert paths[0].read_bytes() != paths[1].read_bytes()


def test_bench_photos_reports_both_rates_and_the_stages(tiny_run, tmp_path):
    artifact = tiny_run / "export" / "model.int8.onnx"
    folder = tmp_path / "photos"
    photos_like(folder, n=6, size=(160, 120))
    proc = edgekit("bench", artifact, "--photos", folder, "--batch", "4", "--seconds", "0.1",
                   "--json")
    report = json.loads(proc.stdout)
    assert report["photos"] == 6 and report["batch"] == 4
    model = report["model_only"]
    assert set(model) == {"batch1_per_s", "batch1_p50_ms", "batch4_per_s", "lanes",
                          "batch1_lanes_per_s", "batch4_lanes_per_s", "best_batch1_per_s",
                          "best_batch4_per_s"}
    lanes = lanes_for(artifact, None)[1]
    assert model["lanes"] == lanes and (model["batch4_lanes_per_s"] is None) == (lanes == 1)
    assert model["best_batch4_per_s"] == max(model["batch4_per_s"],
                                             model["batch4_lanes_per_s"] or 0)
    manifest = json.loads((tiny_run / "export" / "manifest.json").read_text())
    from edgekit.runtime.preprocess.image import fast_path

    assert report["fast_path"] == fast_path(manifest["preprocess"])  # "opencv" where cv2 imports
    assert report["fast_path"] in ("opencv", "pillow", None)
    e2e = report["end_to_end"]
    assert e2e["lanes"] == lanes
    assert e2e["decoders"] == (lanes if lanes > 1 else decode_workers(None))
    assert set(e2e) == {"per_s", "share_of_model_only", "seconds", "model_share",
                        "prepare_core_seconds", "decoders", "lanes"}
    text = edgekit("bench", artifact, "--photos", folder, "--batch", "4", "--seconds",
                   "0.1").stdout
    assert "photos in, labels out:" in text and "model only:" in text
    proc = edgekit("bench", artifact, artifact, "--photos", folder, check=False)
    assert proc.returncode == 1 and "--photos times one artifact file; got 2" in proc.stderr
