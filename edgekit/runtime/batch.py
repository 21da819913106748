"""Predict over many inputs: files and folders in batches, results streamed in input order.

    runner = edgekit.runtime.load("model.int8.onnx")
    stats = Throughput(batch=32)
    for result in predict_files(runner, expand_inputs(["photos/"], runner), 32, stats=stats):
        print(result["input"], result["label"])
    print(stats.line())   # 1000 inputs in 2.1 s: 476 inputs/s end to end (...)

The next batches are decoded in worker threads (`decode_workers`) while the current one runs,
so decoding (Pillow releases the GIL) overlaps inference (onnxruntime releases it too). Where
the backend takes calls from several threads at once (onnxruntime on the CPU), the cores run
in lanes instead (`lanes_for`): each lane decodes a batch and runs it on one intra-op thread,
so no core waits for another inside a model call while a decoder holds it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import not_a_file
from edgekit.runtime import Runner, load, preprocess
from edgekit.runtime.throughput import Throughput


def expand_inputs(paths: list[str | Path], runner: Runner) -> list[Path]:
    """Files as given, folders expanded (recursively, sorted, hidden names skipped) to the
    files whose suffix the manifest's preprocess kind reads (.png, .jpg, ... for images).

    Raises:
        EdgekitError: a path that does not exist, or a folder with no such file.
    """
    spec = runner._require_manifest()["preprocess"]
    suffixes = preprocess.get_kind(spec).suffixes
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in suffixes and f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise EdgekitError(f"folder {str(p)!r} holds no {spec['kind']} files; expected "
                                   f"files ending in {', '.join(suffixes)}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise EdgekitError(f"input {str(p)!r} {not_a_file(p)}; expected a file or a folder")
    return files


def decode_workers(threads: int | None) -> int:
    """Threads that decode inputs beside a model running on `threads` intra-op threads (None:
    every core): one, plus each core the model leaves free. On 2 cores and a 2-thread model
    that is one decoder, which fills the model's gaps instead of fighting it for cores."""
    from edgekit.machine import usable_cores

    cores = usable_cores()
    return 1 + max(0, cores - min(threads or cores, cores))


def lanes_for(artifact: str | Path, threads: int | None, device: str = "cpu") -> tuple[int, int]:
    """(intra-op threads per model call, model calls at once) for a run over many inputs.

    onnxruntime on the CPU runs concurrent calls of one session, each on its calling thread
    and its own intra-op threads: `threads` (default 1) per lane and as many lanes as the
    cores hold. Two 1-thread lanes on 2 cores, each decoding its own batch, beat one 2-thread
    call beside a decoder: a parallel kernel waits for its slowest thread, and a decoder on
    one of the cores makes that thread slow. Other backends keep one call at a time.
    """
    from edgekit.machine import usable_cores

    if device != "cpu" or Path(artifact).suffix.lower() != ".onnx":
        return threads, 1
    per = threads or 1
    return per, max(1, usable_cores() // per)


def predict_files(runner: Runner, files: list[Path], batch: int = 32, k: int = 5,
                  skip_bad: bool = False, stats: Throughput | None = None,
                  workers: int = 1, lanes: int = 1) -> Iterator[dict]:
    """Yield {"input": path, **result} for each file, in order, `batch` files per inference.

    `workers` threads decode and prepare the files (Pillow and numpy release the GIL) while
    the model runs on the batch before; at most three batches are decoded ahead, so memory
    stays bounded whatever the number of files. With `lanes` > 1 (a runner that takes
    concurrent calls) each of `lanes` threads decodes a batch and runs it instead, at most
    one batch per lane ahead of the one being yielded.

    Args:
        skip_bad: yield {"input": path, "error": why} for a file that cannot be read or
            prepared, and go on; otherwise the first such file raises.
        stats: filled in as results are yielded (`prepare_seconds` sums the decoders'
            time, which overlaps inference).

    Raises:
        EdgekitError: (skip_bad=False) the first input that cannot be read or prepared.
    """
    stats = stats or Throughput(batch)
    stats.batch = batch
    if lanes > 1 and not runner.stateful:
        return _in_lanes(runner, files, batch, k, skip_bad, stats, lanes)
    return _one_call_at_a_time(runner, files, batch, k, skip_bad, stats, workers)


def _prepared(runner: Runner, f: Path, skip_bad: bool) -> tuple[np.ndarray | None, str | None,
                                                                float]:
    """(input, None, seconds), or (None, why, seconds) for a bad file when `skip_bad`."""
    t0 = time.perf_counter()
    try:
        return runner.prepare(f), None, time.perf_counter() - t0
    except EdgekitError as e:
        if not skip_bad:
            raise
        return None, str(e), time.perf_counter() - t0


def _results(runner: Runner, files: list[Path], prepared: list, k: int) -> list[dict]:
    """One batch's results in file order; a file that could not be prepared gets its error."""
    good = [x for x, err, _ in prepared if err is None]
    results = iter(runner.infer(np.stack(good), k) if good else [])
    return [{"input": str(f), "error": err} if err else {"input": str(f), **next(results)}
            for f, (_, err, _) in zip(files, prepared, strict=True)]


def _in_lanes(runner: Runner, files: list[Path], batch: int, k: int, skip_bad: bool,
              stats: Throughput, lanes: int) -> Iterator[dict]:
    from collections import deque

    stats.lanes = lanes
    start = time.perf_counter()

    def lane(chunk: list[Path]) -> tuple[list[dict], float, float]:
        prepared = [_prepared(runner, f, skip_bad) for f in chunk]
        t0 = time.perf_counter()
        results = _results(runner, chunk, prepared, k)
        return results, sum(p[2] for p in prepared), time.perf_counter() - t0

    chunks = (files[i:i + batch] for i in range(0, len(files), batch))
    pending: deque = deque()
    pool = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="edgekit-lane")
    try:
        for chunk in chunks:
            pending.append(pool.submit(lane, chunk))
            if len(pending) > lanes:  # every lane busy and one more batch queued
                yield from _account(pending.popleft().result(), stats, start)
        while pending:
            yield from _account(pending.popleft().result(), stats, start)
    finally:  # an error or a consumer that stops early: drop what has not started
        pool.shutdown(wait=True, cancel_futures=True)


def _account(done: tuple[list[dict], float, float], stats: Throughput, start: float):
    """Count one batch's (results, prepare seconds, model seconds) into `stats`; yield them."""
    results, prepare_seconds, infer_seconds = done
    stats.prepare_seconds += prepare_seconds
    stats.infer_seconds += infer_seconds / stats.lanes  # the lanes' model time, per lane
    for result in results:
        stats.inputs += 1
        stats.failed += "error" in result
        stats.seconds = time.perf_counter() - start
        yield result


def _one_call_at_a_time(runner: Runner, files: list[Path], batch: int, k: int, skip_bad: bool,
                        stats: Throughput, workers: int) -> Iterator[dict]:
    from collections import deque

    start = time.perf_counter()
    todo = iter(files)
    pending: deque = deque()  # (path, future) in input order
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgekit-prepare")

    def fill() -> None:  # the next batch and the one after are decoding while a batch runs
        while len(pending) < 3 * batch:
            f = next(todo, None)
            if f is None:
                return
            pending.append((f, pool.submit(_prepared, runner, f, skip_bad)))

    try:
        fill()
        while pending:
            chunk = [pending.popleft() for _ in range(min(batch, len(pending)))]
            fill()
            prepared = [future.result() for _, future in chunk]
            t0 = time.perf_counter()
            results = _results(runner, [f for f, _ in chunk], prepared, k)
            yield from _account((results, sum(p[2] for p in prepared),
                                 time.perf_counter() - t0), stats, start)
    finally:  # an error or a consumer that stops early: drop what has not started
        pool.shutdown(wait=True, cancel_futures=True)


def sample_input(runner: Runner, index: int, path: Path | None = None) -> tuple[np.ndarray, str]:
    """Held-out input `index` from the samples.npz shipped beside an artifact: (x, true label).

    Args:
        path: the samples.npz to read instead (an export's, for a shipped candidate).
    """
    path = path or runner.path.with_name("samples.npz")
    if not path.is_file():
        raise EdgekitError(f"no held-out samples beside {str(runner.path)!r} "
                           f"({path.name} missing)")
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
    except (OSError, ValueError, KeyError) as e:
        raise EdgekitError(f"{str(path)!r} is damaged: {e}") from None
    if not 0 <= index < len(y):
        raise EdgekitError(f"--sample {index}: expected 0 to {len(y) - 1}")
    manifest = runner.manifest or {}
    if manifest.get("task"):  # a class name, a decoded text, or values
        from edgekit.tasks import get_task

        return x[index], get_task(manifest["task"]).target(y[index], manifest.get("labels"))
    return x[index], str(y[index])


@dataclass
class Prediction:
    """What `predict()` set up: the runner, how many inputs, and the results to iterate.

    `count` is None for tables, whose rows are counted as they stream; their progress is
    `stats.bytes_read` of `total_bytes`.
    """

    runner: Runner
    count: int | None
    results: Iterator[dict]
    stats: Throughput
    total_bytes: int = 0
    chosen: str = ""  # for an export directory: what its tuned.json chose
    frames: bool = False  # a video or camera: one result per frame, `stats` a FrameStats


def predict(artifact: str | Path, inputs: list[str | Path], sample: int | None = None,
            batch: int = 32, k: int = 3, threads: int | None = None, device: str = "cpu",
            verify: bool = True, skip_bad: bool = False, texts: list[str] = (),
            exact_preprocessing: bool = False, camera: str | None = None, every: int = 1,
            max_frames: int | None = None, stop=None) -> Prediction:
    """Load `artifact` and set up prediction over files/folders, texts, or held-out sample N.

    `artifact` may be an export directory: the file and thread count its tuned.json chose run
    (edgekit.tuned.resolve; `threads` overrides the tuned count).

    A tabular model predicts every row of each .csv/.json table, streamed `batch` rows at a
    time (see edgekit.runtime.rows).

    A stateful model reads its inputs one at a time, in order: consecutive windows of one
    series, its hidden state carried from each into the next.

    `exact_preprocessing` prepares images exactly as training did, even where the export
    allowed the fast path.

    One video file as `inputs`, or a `camera` (an index or /dev/videoN), predicts frames
    (edgekit.runtime.video.predict_frames: `every`, `max_frames`, and a threading.Event
    `stop` that ends the run early).

    Returns:
        A Prediction whose `results` yields one JSON-able dict per input, in order
        ({"input": ..., **the task's result}); `stats` fills in as they are consumed.

    Raises:
        EdgekitError: not exactly one of inputs/texts/sample, or any load/input error.
    """
    if sum((bool(inputs), bool(texts), sample is not None, camera is not None)) != 1:
        raise EdgekitError("give INPUT files or folders (or one video), or --camera DEVICE, or "
                           "--sample N, or --text TEXT (a text model): exactly one of them")
    from edgekit.runtime import video

    clip = video.video_input(inputs, camera, every, max_frames)
    from edgekit.tuned import export_dir

    samples = export_dir(artifact) / "samples.npz" if Path(artifact).is_dir() else None
    artifact, threads, lanes, chosen = _cores(artifact, threads, device,
                                              many=bool(inputs) and not clip)
    runner = load(artifact, threads=threads, device=device, verify=verify)
    runner.exact_preprocessing = exact_preprocessing
    if runner.stateful:
        batch = 1
    stats = Throughput(batch)
    if texts:
        kind = runner._require_manifest()["preprocess"]["kind"]
        if kind != "text":
            raise EdgekitError(f"--text: {runner.path.name} takes {kind} input, not text; give "
                               "INPUT files")
        t0 = time.perf_counter()
        results = ({"input": t, **r} for t, r in zip(
            texts, runner.predict_batch(list(texts), k), strict=True))
        stats.inputs = len(texts)
        stats.seconds = stats.infer_seconds = time.perf_counter() - t0
        return Prediction(runner, len(texts), results, stats, chosen=chosen)
    if sample is not None:
        x, label = sample_input(runner, sample, samples)
        runner._require_manifest()
        results = iter([{"input": f"held-out sample {sample}", "true_label": label,
                         **runner.infer(x[None], k)[0]}])
        return Prediction(runner, 1, results, stats, chosen=chosen)
    if clip or camera is not None:
        source = video.open_for(runner, clip, camera)
        stats = video.FrameStats(source.name)
        results = video.predict_frames(runner, source, batch, k, every, max_frames, stats, stop)
        return Prediction(runner, None, results, stats, chosen=chosen, frames=True)
    files = expand_inputs(inputs, runner)
    if runner.manifest["preprocess"]["kind"] == "tabular":  # every row of every table
        from edgekit.runtime.rows import predict_rows

        return Prediction(runner, None, predict_rows(runner, files, batch, k, skip_bad, stats),
                          stats, total_bytes=sum(f.stat().st_size for f in files), chosen=chosen)
    if len(files) > 1:  # lazy imports and first-run allocations: loading's cost, not the run's
        runner.warm_up()  # (one input would pay them once either way)
    return Prediction(runner, len(files),
                      predict_files(runner, files, batch, k, skip_bad, stats,
                                    decode_workers(threads), lanes), stats, chosen=chosen)


def _cores(artifact, threads: int | None, device: str, many: bool):
    """(artifact, threads, lanes, what tuned.json chose) for predict: an export directory's
    chosen file (edgekit.tuned.resolve); over many files the cores in lanes where the backend
    allows it. A tuned thread count is one call's best latency: over many inputs lanes of one
    thread each (or of --threads) do more."""
    from edgekit.tuned import resolve

    asked = threads
    artifact, threads, chosen = resolve(artifact, threads)
    per, lanes = lanes_for(artifact, asked, device) if many else (threads, 1)
    if lanes > 1:
        threads = per
        chosen += f"; over many inputs {lanes} lanes of {per} thread(s)" if chosen else ""
    return artifact, threads, lanes, chosen


class ResultsCsv:
    """Prediction results as CSV rows, written as they come: input, row (for tables), the
    task's scalar fields (label, probability; or one column per value) and error.

    The columns are those of the first result that is not an error; error entries before it
    wait (at most `hold` of them) so that every line has the same columns.
    """

    def __init__(self, f, hold: int = 10000):
        import csv

        self.f = f
        self.csv = csv
        self.writer = None
        self.waiting: list[dict] = []
        self.hold = hold
        self.rows = 0

    def write(self, result: dict) -> None:
        row = flat(result)
        if self.writer is None:
            if "error" in row and len(self.waiting) < self.hold:
                self.waiting.append(row)
                return
            self._start(row)
        self.writer.writerow(row)
        self.rows += 1

    def close(self) -> None:
        """Write what still waits (every result an error: their own columns)."""
        if self.writer is None and self.waiting:
            self._start(self.waiting[0])

    def _start(self, row: dict) -> None:
        columns = [c for c in row if c != "error"] + ["error"]
        self.writer = self.csv.DictWriter(self.f, columns, extrasaction="ignore",
                                          lineterminator="\n")
        self.writer.writeheader()
        for waiting in self.waiting:
            self.writer.writerow(waiting)
            self.rows += 1
        self.waiting = []


def flat(result: dict) -> dict:
    """A result's scalar fields; a regression's values as one field per label."""
    out = {}
    values, labels = result.get("values"), result.get("labels")
    for key, v in result.items():
        if key == "values" and isinstance(labels, list) and len(labels) == len(values) \
                and not any(isinstance(x, list) for x in values):
            out.update(zip(labels, values, strict=True))
        elif v is None or isinstance(v, (str, int, float)):
            out[key] = v
    return out
