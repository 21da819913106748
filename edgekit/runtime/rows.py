"""Many-row tables: every row of .csv (streamed) and .json files through a tabular model.

    runner = edgekit.runtime.load("adult/export/model.onnx")
    for result in predict_rows(runner, [Path("people.csv")], batch=256):
        print(result["row"], result["label"])

A CSV is read `batch` rows at a time and never whole, so a table of a million rows needs the
memory of one batch; results come in input order, each with its row number (the first row
after the header is 1). A bad row is an error naming the file, the row and its line; with
`skip_bad` it becomes an error entry and the rows after it are still predicted.
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.runtime import Runner
from edgekit.runtime.preprocess import tabular


class Counting(io.RawIOBase):
    """A binary file that counts the bytes read from it: a stream's progress."""

    def __init__(self, f):
        self.f = f
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.f.readinto(buffer)
        self.read_bytes += n or 0
        return n


def predict_rows(runner: Runner, files: list[Path], batch: int = 256, k: int = 5,
                 skip_bad: bool = False, stats=None) -> Iterator[dict]:
    """Yield {"input": file, "row": n, **result} for every row of every file, in order.

    Args:
        stats: a throughput.Throughput, filled in as results are yielded; its `bytes_read` follows
            the files' bytes consumed (for a progress bar over `sum of file sizes`).

    Raises:
        EdgekitError: a file without rows (a header only); (skip_bad=False) a file that is
            not a table, or the first bad row, naming the file, the row and its line.
    """
    from edgekit.runtime.throughput import Throughput

    stats = stats or Throughput(batch)
    start = time.perf_counter()
    spec = runner._require_manifest()["preprocess"]
    done_bytes = 0
    for path in files:
        with open(path, "rb") as f:
            raw = Counting(f)
            rows = _numbered_rows(path, spec, raw, skip_bad)
            first = True
            while (chunk := list(itertools.islice(rows, batch))) or first:
                if first and not chunk:  # as serve's 400: not an empty answer and exit 0
                    raise EdgekitError(f"{str(path)!r}: a header but no rows to predict")
                first = False
                t0 = time.perf_counter()
                prepared = _encode(chunk, spec, path, skip_bad)
                good = [x for _, _, x, err in prepared if err is None]
                t1 = time.perf_counter()
                results = iter(runner.infer(np.stack(good), k) if good else [])
                stats.prepare_seconds += t1 - t0
                stats.infer_seconds += time.perf_counter() - t1
                stats.bytes_read = done_bytes + raw.read_bytes
                for row, _, _, err in prepared:
                    stats.inputs += 1
                    stats.failed += err is not None
                    stats.seconds = time.perf_counter() - start
                    yield ({"input": str(path), "row": row, "error": err} if err else
                           {"input": str(path), "row": row, **next(results)})
        done_bytes += raw.read_bytes
    stats.bytes_read = done_bytes


def _numbered_rows(path: Path, spec: dict, raw: Counting, skip_bad: bool
                   ) -> Iterator[tuple[int, int, dict | EdgekitError]]:
    """(row number, line number, row or its error) of a .csv (streamed) or .json file."""
    if path.suffix.lower() == ".json":
        tabular.check_json_size(path)
        try:
            text = raw.readall().decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise EdgekitError(f"{str(path)!r} is not UTF-8 text ({e.reason})") from None
        return ((i, 0, r) for i, r in enumerate(tabular.from_json(text, str(path)), 1))
    lines = tabular.csv_rows(tabular.open_csv(path, io.BufferedReader(raw, 1 << 16)), spec,
                             str(path), skip_bad)
    return ((i, line, r) for i, (line, r) in enumerate(lines, 1))


def _encode(chunk: list[tuple[int, int, dict]], spec: dict, path: Path, skip_bad: bool
            ) -> list[tuple[int, int, np.ndarray | None, str | None]]:
    """Rows -> (row, line, features (F,) or None, error or None); a bad row named."""
    try:  # the common case: the whole chunk in one call
        if not any(isinstance(r, EdgekitError) for _, _, r in chunk):
            x = tabular.rows_to_array([r for _, _, r in chunk], spec)
            return [(row, line, x[i], None) for i, (row, line, _) in enumerate(chunk)]
    except EdgekitError:
        pass
    out = []
    for row, line, r in chunk:  # find the bad row(s) and name them
        try:
            if isinstance(r, EdgekitError):
                raise r
            out.append((row, line, tabular.rows_to_array([r], spec)[0], None))
        except EdgekitError as e:
            where = f" (line {line})" if line and not isinstance(r, EdgekitError) else ""
            message = f"{str(path)!r} row {row}{where}: {e}"
            if not skip_bad:
                raise EdgekitError(message) from None
            out.append((row, line, None, message))
    return out
