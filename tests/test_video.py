"""Video files and cameras (issue 27): frames in order, drops instead of queues, bad input.

Real video files are written here with OpenCV's VideoWriter (MJPG in .avi) and read back
through the real OpenCV path; a live camera is a fake source that is always faster than the
model (the model waits for it to deliver more frames), so drop counts hold on any machine,
however loaded. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.runtime import video
from edgekit.runtime.video import Frames, FrameStats, frame_to_image, open_video, predict_frames

cv2 = pytest.importorskip("cv2")


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    """BGR frames (H, W, 3) uint8 -> an MJPG .avi that OpenCV reads back."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def gray_frames(n: int, w: int = 64, h: int = 48) -> list[np.ndarray]:
    """Frame i is a flat BGR picture of brightness 8 * i (readable back through MJPG)."""
    return [np.full((h, w, 3), 8 * i, np.uint8) for i in range(n)]


class FakeRunner:
    """Prepares a PIL image to its mean (1, 1, 1); infer labels each row with that value.
    `gate`, if set, is called before each inference (a model that waits)."""

    def __init__(self, gate=None):
        self.gate = gate
        self.batches: list[int] = []

    def prepare(self, img):
        assert isinstance(img, Image.Image) and img.mode == "RGB"
        return np.full((1, 1, 1), np.asarray(img, np.float32).mean(), np.float32)

    def infer(self, x, k=5):
        if self.gate:
            self.gate()
        self.batches.append(len(x))
        return [{"label": str(int(round(float(row.ravel()[0])))), "top": []} for row in x]


class FakeCamera:
    """A live source of numbered frames (frame i has brightness i % 256), endless unless
    `limit`; counts the frames it sent and whether it was closed."""

    live = True
    name = "camera fake"

    def __init__(self, limit: int | None = None):
        self.sent, self.limit, self.closed = 0, limit, False
        self.cond = threading.Condition()

    def read(self, retrieve=True):
        with self.cond:
            if self.limit is not None and self.sent >= self.limit:
                return None
            self.sent += 1
            self.cond.notify_all()
            return np.full((4, 4, 3), (self.sent - 1) & 255, np.uint8), self.sent / 30

    def wait_for(self, count: int) -> None:
        """Block until `count` frames were sent (or the source ended)."""
        with self.cond:
            while self.sent < count and not (self.limit is not None and self.sent >= self.limit):
                self.cond.wait(0.05)

    def close(self):
        self.closed = True


# -- the hand-over ------------------------------------------------------------------------------


def test_frames_drops_the_oldest_when_live_and_never_holds_more_than_its_capacity():
    stop = threading.Event()
    live = Frames(2, drop_oldest=True)
    for i in range(10):
        assert live.put(i)
    assert live.dropped == 8 and live.most == 2
    assert live.take(5, stop) == [8, 9]
    live.end()
    assert live.take(5, stop) == []  # ended and empty: the end of the stream
    assert live.put(10) and live.close() == 1 and not live.put(11)  # the consumer has gone


def test_frames_from_a_file_wait_for_room_and_lose_nothing():
    frames, stop = Frames(3, drop_oldest=False), threading.Event()
    got: list[int] = []
    producer = threading.Thread(target=lambda: [frames.put(i) for i in range(50)] and
                                frames.end())
    producer.start()
    while batch := frames.take(2, stop):
        got += batch
    producer.join()
    assert got == list(range(50)) and frames.dropped == 0 and frames.most <= 3


# -- a live camera: the model gets the newest frame, the rest are dropped ----------------------


def test_a_camera_faster_than_the_model_drops_frames_and_holds_at_most_one():
    camera = FakeCamera(limit=200)
    # The model waits for three more frames before each run: always slower than the camera.
    runner = FakeRunner(gate=lambda: camera.wait_for(camera.sent + 3))
    stats = FrameStats(camera.name)
    out = list(predict_frames(runner, camera, batch=8, k=1, stats=stats))
    assert stats.read == camera.sent == 200 and camera.closed
    assert stats.predicted == len(out) and stats.predicted + stats.dropped == stats.read
    assert stats.most_held <= video.LIVE_SLOTS == 1
    assert set(runner.batches) == {1}  # a camera runs frame by frame, the newest each time
    frames = [r["frame"] for r in out]
    assert frames == sorted(set(frames))  # newer and newer, never one twice
    assert all(r["label"] == str(r["frame"] & 255) for r in out)  # each result is its frame
    # each run lets at least 3 frames arrive, of which the slot keeps one
    assert stats.dropped >= 2 * (stats.predicted - 2)  # (the last runs may see the end)
    assert "dropped (the model was slower than the camera)" in stats.line()


def test_a_stop_ends_an_endless_camera_with_consistent_counts():
    camera, stop = FakeCamera(), threading.Event()
    stats = FrameStats(camera.name)
    results = predict_frames(FakeRunner(), camera, stats=stats, stop=stop)
    for n, _ in enumerate(results, 1):
        if n == 5:
            stop.set()  # what the CLI's SIGINT/SIGTERM handler does
    assert stats.predicted == 5 and camera.closed
    assert stats.predicted + stats.dropped == stats.read == camera.sent


def test_a_camera_that_stops_sending_is_one_error_after_its_results():
    class Unplugged(FakeCamera):
        def read(self, retrieve=True):
            if self.sent == 3:
                raise EdgekitError("camera fake stopped sending frames after 3")
            return super().read(retrieve)

    camera = Unplugged()
    runner = FakeRunner(gate=lambda: camera.wait_for(3))
    with pytest.raises(EdgekitError, match="stopped sending frames after 3"):
        list(predict_frames(runner, camera))
    assert camera.closed


# -- video files through the real OpenCV -------------------------------------------------------


def test_a_file_predicts_every_frame_in_order_with_its_timestamp(tmp_path):
    clip = write_clip(tmp_path / "clip.avi", gray_frames(30), fps=25)
    stats = FrameStats("clip")
    out = list(predict_frames(FakeRunner(), open_video(clip), batch=4, stats=stats))
    assert [r["frame"] for r in out] == list(range(30))
    assert [r["time"] for r in out] == [round(i / 25, 3) for i in range(30)]
    labels = [int(r["label"]) for r in out]
    assert all(abs(a - 8 * i) <= 2 for i, a in enumerate(labels))  # MJPG: close, not equal
    assert (stats.read, stats.predicted, stats.dropped, stats.skipped) == (30, 30, 0, 0)
    assert stats.most_held <= 2 * 4  # two batches ahead at most, however long the clip


def test_every_and_max_frames_bound_what_a_file_costs(tmp_path):
    clip = write_clip(tmp_path / "clip.avi", gray_frames(30))
    stats = FrameStats("clip")
    out = list(predict_frames(FakeRunner(), open_video(clip), batch=4, every=4, max_frames=21,
                              stats=stats))
    assert [r["frame"] for r in out] == [0, 4, 8, 12, 16, 20]
    assert (stats.read, stats.predicted, stats.skipped, stats.dropped) == (21, 6, 15, 0)
    assert "15 skipped (--every)" in stats.line()


def test_a_bgr_frame_becomes_the_rgb_image_a_png_of_it_holds(tmp_path):
    frame = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "f.png"), frame)
    with Image.open(tmp_path / "f.png") as png:
        assert np.array_equal(np.asarray(frame_to_image(frame)), np.asarray(png.convert("RGB")))
    assert np.array_equal(np.asarray(frame_to_image(frame[:, :, 0])), frame[:, :, 0])
    bgra = np.dstack([frame, np.full((5, 7), 9, np.uint8)])
    assert np.array_equal(np.asarray(frame_to_image(bgra)), frame[:, :, ::-1])
    with pytest.raises(EdgekitError, match="expected uint8"):
        frame_to_image(frame.astype(np.float32))


def test_bad_video_files_are_one_line(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video\n")
    with pytest.raises(EdgekitError, match="is not a video OpenCV can read"):
        open_video(tmp_path / "notes.mp4")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    os.rename(tmp_path / "photo.png", tmp_path / "photo.avi")
    with pytest.raises(EdgekitError, match="is a PNG image, not a video"):
        open_video(tmp_path / "photo.avi")
    writer = cv2.VideoWriter(str(tmp_path / "empty.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25,
                             (64, 48))
    writer.release()  # a container, and no frame in it
    with pytest.raises(EdgekitError, match="has no frames"):
        open_video(tmp_path / "empty.avi")
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(EdgekitError, match=r"is empty \(0 bytes\)"):
        open_video(tmp_path / "zero.mp4")
    with pytest.raises(EdgekitError, match="does not exist"):
        open_video(tmp_path / "nope.mp4")


def test_a_missing_camera_and_a_bad_camera_name_are_one_line():
    with pytest.raises(EdgekitError, match="camera 63 could not be opened"):
        video.open_camera("63")  # V4L2's last index: no machine running the tests has it
    with pytest.raises(EdgekitError, match="expected a camera index"):
        video.open_camera("front")


def test_without_opencv_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 raises ImportError
    with pytest.raises(EdgekitError, match=r"pip install 'edgekit\[video\]'"):
        open_video(Path(__file__))  # (any existing file: OpenCV is needed first)
    with pytest.raises(EdgekitError, match=r"edgekit\[video\].*picamera2"):
        video.open_camera("0")


# -- the real CLI on a trained model -----------------------------------------------------------


def digit_frames(tiny_run: Path, n: int) -> list[np.ndarray]:
    """Held-out digits as 640x480 BGR frames (the 32x32 digit scaled up, centered)."""
    manifest = json.loads((tiny_run / "export" / "manifest.json").read_text())
    spec = manifest["preprocess"]
    with np.load(tiny_run / "export" / "samples.npz") as z:
        xs = z["x"][:n]
    frames = []
    for x in xs:  # undo the normalization: the 8-bit digit training saw
        digit = np.clip(np.rint((x[0] * spec["std"][0] + spec["mean"][0]) * 255), 0, 255)
        big = cv2.resize(digit.astype(np.uint8), (480, 480), interpolation=cv2.INTER_NEAREST)
        frame = np.zeros((480, 640, 3), np.uint8)
        frame[:, 80:560] = big[:, :, None]
        frames.append(frame)
    return frames


def cli(*args) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.slow
def test_a_video_gets_the_labels_its_frames_get_as_images(tiny_run, tmp_path):
    model = tiny_run / "export" / "model.int8.onnx"
    clip = write_clip(tmp_path / "digits.avi", digit_frames(tiny_run, 16) * 2, fps=30)
    code, out, err = cli("predict", model, clip, "--json", "-k", "2", "--batch", "5")
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["frame"] for r in results] == list(range(32))
    assert err.startswith(f"{clip}: 32 frame(s) read, 32 predicted, 0 dropped in ")
    assert "frames/s end to end (model " in err and len(err.splitlines()) == 1
    # the same frames, as OpenCV decoded them, saved as PNG and predicted as images
    frames, capture = tmp_path / "frames", cv2.VideoCapture(str(clip))
    frames.mkdir()
    for i in range(32):
        ok, frame = capture.read()
        assert ok and cv2.imwrite(str(frames / f"{i:03d}.png"), frame)
    code, out, _ = cli("predict", model, frames, "--json", "-k", "2")
    images = [json.loads(line) for line in out.splitlines()]
    for got, want in zip(results, images, strict=True):
        assert got["label"] == want["label"] and got["top"] == want["top"]
    code, out, _ = cli("predict", model, clip, "-k", "1", "--max-frames", "2")
    assert out.splitlines()[1].startswith(f"{clip} frame 1 at 0.033 s  {results[1]['label']} ")


@pytest.mark.slow
def test_the_cli_refuses_bad_video_input_in_one_line(tiny_run, tmp_path):
    model = tiny_run / "export" / "model.int8.onnx"
    (tmp_path / "notes.mp4").write_text("not a video\n")
    clip = write_clip(tmp_path / "c.avi", gray_frames(2))
    for args, message in [
        ((tmp_path / "notes.mp4",), "is not a video OpenCV can read"),
        ((clip, tiny_run / "sample.png"), "expected one video file alone"),
        ((tiny_run / "sample.png", "--every", "2"), "--every and --max-frames apply to"),
        (("--camera", "63"), "camera 63 could not be opened"),
        ((clip, "--camera", "0"), "exactly one of them"),
    ]:
        code, out, err = cli("predict", model, *args)
        assert (code, out) == (1, ""), (args, err)
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_a_camera_through_the_cli_says_what_it_dropped(tiny_run, monkeypatch):
    camera = FakeCamera(limit=40)
    monkeypatch.setattr(video, "open_camera", lambda device: camera)
    code, out, err = cli("predict", tiny_run / "export" / "model.int8.onnx", "--camera", "0",
                         "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines and all(r["input"] == "camera fake" for r in lines)
    assert err.startswith("camera fake: 40 frame(s) read (")
    dropped = int(err.split(" predicted, ")[1].split(" dropped")[0])
    assert len(lines) + dropped == 40


@pytest.mark.slow
def test_sigterm_ends_a_video_with_the_closing_line(tiny_run, tmp_path):
    clip = write_clip(tmp_path / "long.avi", gray_frames(30, 32, 32) * 100)  # 3000 frames
    # Unbuffered bytes: a text pipe's readline() may buffer the lines after the first, which
    # communicate() (reading the descriptor) would never see (a loaded machine did that).
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekit", "predict", tiny_run / "export" / "model.int8.onnx",
         clip, "--batch", "1", "-k", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        bufsize=0, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout.readline().decode().startswith(f"{clip} frame 0 at 0.000 s")
    proc.send_signal(signal.SIGTERM)
    out, err = (b.decode() for b in proc.communicate(timeout=60))
    assert proc.returncode == 0, err
    assert err.startswith(f"{clip}: ") and err.rstrip().endswith("stopped by SIGTERM")
    predicted = int(err.split(" read, ")[1].split(" predicted")[0])
    assert predicted == 1 + len(out.splitlines()) < 3000
