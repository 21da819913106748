"""Video files and live cameras: frames in, one result per frame out, with frames/s.

    runner = edgekit.runtime.load("model.int8.onnx")
    stats = FrameStats("clip.mp4")
    for r in predict_frames(runner, open_video("clip.mp4"), "clip.mp4", stats=stats):
        print(r["frame"], r["time"], r["label"])
    print(stats.line())  # 300 frame(s) read, 300 predicted, 0 dropped in 2.1 s: 143 frames/s ...

A capture thread reads frames while the model runs on the ones before. From a file it prepares
them too and hands them over through a bounded queue that waits for the model (every frame is
predicted; memory stays bounded whatever the clip's length). From a live camera it only grabs:
it keeps the newest frame in a slot of one, a frame overwritten there before the model took it
is dropped (and counted), and the model always runs on the latest picture.

Sources: OpenCV's VideoCapture (the `video` extra, `pip install 'edgekit[video]'`) for files
and cameras; picamera2 for a camera on a Raspberry Pi where it is installed. A source is
anything with `read(retrieve=True) -> (BGR frame (H, W, 3) uint8, seconds) or None at the
end`, `close()`, `live` and `name`, so a test can hand in its own.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, one_line
from edgekit.fileio import not_a_file

SUFFIXES = (".mp4", ".m4v", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
            ".3gp", ".ogv", ".mjpeg", ".mjpg", ".h264", ".h265")
EXTRA = "pip install 'edgekit[video]'"
LIVE_SLOTS = 1  # frames a camera may hold for the model: the newest only
CAMERA_SIZE = (640, 480)  # what picamera2 is asked for (width, height)


def is_video(path: str | Path) -> bool:
    """Whether `edgekit predict` reads this input as a video (by its suffix)."""
    return Path(path).suffix.lower() in SUFFIXES


# -- sources -----------------------------------------------------------------------------------


def _cv2():
    """OpenCV, or one line naming the extra that installs it."""
    import os

    # FFmpeg's own log lines ("moov atom not found") and OpenCV's warnings (a camera index
    # that does not exist) would go to stderr beside edgekit's one line that says it all.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    try:
        import cv2
    except ImportError:
        raise EdgekitError(f"reading video or a camera needs OpenCV: {EXTRA}") from None
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    return cv2


class CvSource:
    """Frames from OpenCV's VideoCapture: a file (its timestamps) or a camera (wall time)."""

    def __init__(self, capture, name: str, live: bool, first: tuple | None = None):
        self.capture, self.name, self.live = capture, name, live
        self.fps = capture.get(5) or None  # CAP_PROP_FPS; 0 when unknown
        self.index, self.start = 0, time.monotonic()
        self.first = first  # a file's first frame, read at open to refuse an empty one

    def read(self, retrieve: bool = True) -> tuple[np.ndarray | None, float] | None:
        """The next frame and its time, or None at the end of a file; `retrieve=False` (a
        frame to skip) leaves it unconverted (the codec still decodes it): frame None."""
        frame = None
        if self.first is not None:
            frame, self.first = self.first, None
        else:
            ok = self.capture.grab()
            if ok and retrieve:
                ok, frame = self.capture.retrieve()  # YUV -> BGR: a third of a read's time
            if not ok:
                if self.live:
                    raise EdgekitError(f"{self.name} stopped sending frames after "
                                       f"{self.index}")
                return None
        if self.live:
            seconds = time.monotonic() - self.start
        else:  # the frame's own timestamp in the clip (CAP_PROP_POS_MSEC), else from the rate
            ms = self.capture.get(0)
            seconds = ms / 1000 if ms >= 0 else self.index / self.fps if self.fps else 0.0
        self.index += 1
        return frame, seconds

    def close(self) -> None:
        self.capture.release()


def open_video(path: str | Path) -> CvSource:
    """A video file as a frame source.

    Raises:
        EdgekitError: OpenCV missing (naming the extra), a missing file, a file that is not a
            video OpenCV can read, or a video with no frames.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"video {str(path)!r} {not_a_file(path)}; expected a video file")
    if path.stat().st_size == 0:
        raise EdgekitError(f"video {str(path)!r} is empty (0 bytes); expected a video file")
    _not_an_image(path)
    cv2 = _cv2()
    # FFmpeg by name: OpenCV's image-sequence reader would take 'img%02d.png' as a pattern.
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        raise EdgekitError(f"video {str(path)!r} is not a video OpenCV can read; expected "
                           f"a video file ({', '.join(SUFFIXES[:6])}, ...)")
    ok, frame = capture.read()
    if not ok or frame is None:
        capture.release()
        raise EdgekitError(f"video {str(path)!r} has no frames; expected a video with at "
                           "least one frame")
    return CvSource(capture, str(path), live=False, first=frame)


def _not_an_image(path: Path) -> None:
    """FFmpeg opens a still image as a video of one frame: a photo named .mp4 is refused."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            kind = img.format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return
    if kind not in ("MPEG",):  # Pillow identifies (but cannot decode) MPEG-1 video
        raise EdgekitError(f"video {str(path)!r} is a {kind} image, not a video; give "
                           "images with another suffix (.png, .jpg, ...)")


def parse_camera(device: str) -> int | str:
    """`--camera` as given: an index (0, 1, ...) or a device path (/dev/video0)."""
    text = str(device).strip()
    if text.isdigit():
        return int(text)
    if text.startswith("/dev/"):
        return text
    raise EdgekitError(f"--camera {device!r}: expected a camera index (0, 1, ...) or a "
                       "device path such as /dev/video0")


def open_camera(device: str) -> object:
    """A live camera as a frame source: picamera2 where it is installed (a Raspberry Pi
    camera by index), else OpenCV (any V4L2/USB camera, by index or /dev/videoN).

    Raises:
        EdgekitError: neither library, or no camera at that index or path.
    """
    which = parse_camera(device)
    if isinstance(which, int):
        source = _picamera(which)
        if source is not None:
            return source
    try:
        cv2 = _cv2()
    except EdgekitError:
        raise EdgekitError(f"--camera needs OpenCV ({EXTRA}) or, on a Raspberry Pi, "
                           "picamera2 (sudo apt install python3-picamera2)") from None
    # A device path goes to V4L2 by name (FFmpeg would need libavdevice for it).
    capture = cv2.VideoCapture(which, cv2.CAP_V4L2 if isinstance(which, str) else cv2.CAP_ANY)
    name = f"camera {which}"
    if not capture.isOpened():
        capture.release()
        raise EdgekitError(f"{name} could not be opened: no such camera, or it is in use; "
                           "expected a camera index or device (see ls /dev/video*)")
    capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver too keeps few stale frames
    return CvSource(capture, name, live=True)


class PicameraSource:
    """Frames from a Raspberry Pi camera through picamera2 ("RGB888" is B, G, R in memory:
    the same layout as OpenCV's frames)."""

    live = True

    def __init__(self, camera, name: str):
        self.camera, self.name, self.start = camera, name, time.monotonic()

    def read(self, retrieve: bool = True) -> tuple[np.ndarray, float]:
        return self.camera.capture_array("main"), time.monotonic() - self.start

    def close(self) -> None:
        self.camera.stop()
        self.camera.close()


def _picamera(index: int) -> PicameraSource | None:
    """Camera `index` through picamera2, or None where picamera2 is not installed or does
    not list that camera (a USB camera: OpenCV takes it)."""
    try:
        from picamera2 import Picamera2
    except ImportError:
        return None
    if index >= len(Picamera2.global_camera_info()):
        return None
    try:
        camera = Picamera2(index)
        camera.configure(camera.create_video_configuration(
            main={"format": "RGB888", "size": CAMERA_SIZE}))
        camera.start()
    except Exception as e:  # libcamera's errors: busy, unsupported mode, ...
        raise EdgekitError(f"camera {index} (picamera2) could not start: {one_line(e)}") \
            from None
    return PicameraSource(camera, f"camera {index}")


def video_input(inputs: list, camera: str | None, every: int = 1,
                max_frames: int | None = None) -> Path | None:
    """The video file among `predict`'s inputs (None: images, or a camera).

    Raises:
        EdgekitError: a video beside other inputs, or --every/--max-frames without a video or
            camera.
    """
    videos = [Path(p) for p in inputs if is_video(p)]
    if videos and len(inputs) > 1:
        raise EdgekitError(f"video {str(videos[0])!r} among {len(inputs)} inputs; expected "
                           "one video file alone (or images)")
    if (every != 1 or max_frames is not None) and not videos and camera is None:
        raise EdgekitError("--every and --max-frames apply to a video file or --camera; "
                           "expected one of them")
    return videos[0] if videos else None


def open_for(runner, path: str | Path | None, camera: str | None):
    """The video file at `path`, or the `camera`, as a source for `runner`'s model.

    Raises:
        EdgekitError: a model that does not take images (or carries a hidden state), or what
            open_video / open_camera raise.
    """
    kind = runner.preprocess_spec()["kind"]
    what = f"video {str(path)!r}" if path is not None else f"--camera {camera}"
    if kind != "image":
        raise EdgekitError(f"{what}: {runner.path.name} takes {kind} input, not images; "
                           "expected an image model")
    if runner.stateful:
        raise EdgekitError(f"{what}: {runner.path.name} carries a hidden state from input to "
                           "input; expected a model of single images")
    return open_video(path) if path is not None else open_camera(camera)


# -- frames -> model inputs --------------------------------------------------------------------


def frame_to_image(frame: np.ndarray):
    """An OpenCV frame (H, W, 3) BGR, (H, W, 4) BGRA or (H, W) gray, uint8 -> PIL image (RGB
    or L), converted by Pillow's unpacker (no numpy copy)."""
    from PIL import Image

    if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
        raise EdgekitError(f"a frame of shape {frame.shape} {frame.dtype}; expected uint8 "
                           "(H, W, 3) BGR or (H, W) gray")
    frame = np.ascontiguousarray(frame)
    h, w = frame.shape[:2]
    if frame.ndim == 2:
        return Image.frombuffer("L", (w, h), frame, "raw", "L", 0, 1)
    raw = {3: "BGR", 4: "BGRX"}.get(frame.shape[2])
    if raw is None:
        raise EdgekitError(f"a frame of {frame.shape[2]} channels; expected 3 (BGR) or 4")
    return Image.frombuffer("RGB", (w, h), frame, "raw", raw, 0, 1)


# -- the hand-over between the capture thread and the model ------------------------------------


class Frames:
    """A bounded queue between one producer (the capture thread) and one consumer (the model).

    With `drop_oldest` (a live camera) `put` never waits: a full queue loses its oldest frame,
    counted in `dropped`. Without (a file) `put` waits for room. `most` is the largest number
    of frames it ever held (never above `capacity`).
    """

    def __init__(self, capacity: int, drop_oldest: bool):
        self.capacity, self.drop_oldest = capacity, drop_oldest
        self.items: deque = deque()
        self.cond = threading.Condition()
        self.dropped = self.most = 0
        self.ended = self.closed = False
        self.error: BaseException | None = None

    def put(self, item) -> bool:
        """Hand over one frame; False once the consumer has gone (stop reading)."""
        with self.cond:
            while not self.drop_oldest and len(self.items) >= self.capacity and not self.closed:
                self.cond.wait(0.1)
            if self.closed:
                return False
            if len(self.items) >= self.capacity:
                self.items.popleft()
                self.dropped += 1
            self.items.append(item)
            self.most = max(self.most, len(self.items))
            self.cond.notify_all()
            return True

    def take(self, n: int, stop: threading.Event) -> list:
        """Up to `n` frames, waiting for one; [] at the end of the source or once `stop`."""
        with self.cond:
            while not self.items and not self.ended and not stop.is_set():
                self.cond.wait(0.1)  # a timeout: a signal handler's `stop` is seen soon
            if stop.is_set():
                return []
            out = [self.items.popleft() for _ in range(min(n, len(self.items)))]
            self.cond.notify_all()
            return out

    def end(self, error: BaseException | None = None) -> None:
        """The producer is done (the source ended, or failed with `error`)."""
        with self.cond:
            self.ended, self.error = True, error
            self.cond.notify_all()

    def close(self) -> int:
        """The consumer is done: a waiting `put` returns False. Returns the frames left."""
        with self.cond:
            self.closed = True
            left, self.items = len(self.items), deque()
            self.cond.notify_all()
            return left


@dataclass
class FrameStats:
    """Counts and times of one video or camera run, for the line `edgekit predict` ends with.

    Every frame read is predicted, dropped (a camera's frame replaced by a newer one before
    the model took it, or left when the run stopped) or skipped (`every`).
    """

    source: str
    read: int = 0
    predicted: int = 0
    dropped: int = 0
    skipped: int = 0
    most_held: int = 0  # the most frames waiting for the model at once
    seconds: float = 0.0  # wall time, opening the source to the last result
    decode_seconds: float = 0.0  # a file's frames read and decoded (a camera: not counted)
    prepare_seconds: float = 0.0  # BGR -> RGB, resize, normalize
    infer_seconds: float = 0.0  # runner.infer
    stopped: str = ""  # the signal that ended the run early, if one did
    live: bool = False

    def line(self) -> str:
        """One line for the end of `edgekit predict`."""
        rate = self.predicted / self.seconds if self.seconds > 0 else 0.0
        share = self.infer_seconds / self.seconds if self.seconds > 0 else 0.0
        model_rate = self.predicted / self.infer_seconds if self.infer_seconds > 0 else 0.0
        source_rate = (f" ({self.read / self.seconds:.1f}/s)" if self.live and self.seconds > 0
                       else "")
        why = " (the model was slower than the camera)" if self.live and self.dropped else ""
        skipped = f", {self.skipped} skipped (--every)" if self.skipped else ""
        stopped = f"; stopped by {self.stopped}" if self.stopped else ""
        decoding = "" if self.live else f"decoding {self.decode_seconds:.2f} s, "
        return (f"{self.source}: {self.read} frame(s) read{source_rate}, {self.predicted} "
                f"predicted, {self.dropped} dropped{why}{skipped} in {self.seconds:.2f} s: "
                f"{rate:.1f} frames/s end to end (model {self.infer_seconds:.2f} s = "
                f"{share:.0%} of the time, {model_rate:.1f} frames/s; {decoding}preprocessing "
                f"{self.prepare_seconds:.2f} s){stopped}")

    def as_dict(self) -> dict:
        return {"source": self.source, "frames_read": self.read, "predicted": self.predicted,
                "dropped": self.dropped, "skipped": self.skipped, "seconds": self.seconds,
                "frames_per_second": self.predicted / self.seconds if self.seconds > 0
                else None, "model_seconds": self.infer_seconds,
                "decode_seconds": self.decode_seconds, "preprocess_seconds": self.prepare_seconds,
                "stopped": self.stopped or None}


# -- the run -----------------------------------------------------------------------------------


def predict_frames(runner, source, batch: int = 32, k: int = 5, every: int = 1,
                   max_frames: int | None = None, stats: FrameStats | None = None,
                   stop: threading.Event | None = None) -> Iterator[dict]:
    """Yield {"input": source name, "frame": i, "time": seconds, **result} per frame predicted.

    A file: every `every`-th frame, `batch` frames per inference, in order. A live source:
    the newest frame each time the model is free (batch 1); frames replaced before that are
    dropped. The source is closed when the generator ends, whatever ends it.

    Args:
        every: predict frames 0, every, 2*every, ... (the others are counted as skipped).
        max_frames: stop after reading this many frames (None: until the source ends).
        stats: filled in as results are yielded.
        stop: set it (a signal handler may) to end the run after the frame in hand.

    Raises:
        EdgekitError: a frame that cannot be prepared, or a camera that stops sending.
    """
    stats = stats or FrameStats(source.name)
    stats.live = source.live
    stop = stop or threading.Event()
    frames = Frames(LIVE_SLOTS if source.live else 2 * batch, drop_oldest=source.live)
    halt = threading.Event()  # the consumer is done: the capture thread ends

    def prepare(frame: np.ndarray) -> np.ndarray:  # (H, W, 3) BGR uint8 -> the model's (C, H, W)
        return runner.prepare(frame_to_image(frame))

    start = time.perf_counter()
    thread = threading.Thread(target=_capture, name="edgekit-capture", daemon=True,
                              args=(source, frames, stats, prepare, every, max_frames, halt))
    thread.start()
    try:
        while True:
            items = frames.take(1 if source.live else batch, stop)
            if not items:
                break
            if source.live:  # only the frame the model takes is prepared
                t0 = time.perf_counter()
                items = [(i, t, prepare(frame)) for i, t, frame in items]
                stats.prepare_seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            results = runner.infer(np.stack([x for _, _, x in items]), k)
            stats.infer_seconds += time.perf_counter() - t0
            for (i, t, _), result in zip(items, results, strict=True):
                stats.predicted += 1
                stats.seconds = time.perf_counter() - start
                yield {"input": source.name, "frame": i, "time": round(t, 3), **result}
        if frames.error is not None and not stop.is_set():
            raise frames.error
    finally:
        halt.set()
        frames.close()
        thread.join()
        source.close()
        # Overwritten in the slot, left there, or read while the run was stopping: every
        # frame read and neither predicted nor skipped.
        stats.dropped = stats.read - stats.predicted - stats.skipped
        stats.most_held = frames.most
        stats.seconds = time.perf_counter() - start


def _capture(source, frames: Frames, stats: FrameStats, prepare, every: int,
             max_frames: int | None, halt: threading.Event) -> None:
    """The capture thread: read frames into `frames` until the source ends, `max_frames`
    were read, or the consumer is gone. A file's frames are prepared here (beside the model);
    a camera's are handed over raw."""
    error = None
    try:
        while not halt.is_set() and (max_frames is None or stats.read < max_frames):
            index, t0 = stats.read, time.perf_counter()
            got = source.read(retrieve=not index % every)  # a skipped frame is not converted
            if not source.live:
                stats.decode_seconds += time.perf_counter() - t0
            if got is None:
                break
            frame, seconds = got
            stats.read += 1
            if index % every:
                stats.skipped += 1
                continue
            if not source.live:
                t0 = time.perf_counter()
                frame = prepare(frame)
                stats.prepare_seconds += time.perf_counter() - t0
            if not frames.put((index, seconds, frame)):
                break
    except Exception as e:  # handed to the consumer, which raises it in its own thread
        error = e
    finally:
        frames.end(error)
