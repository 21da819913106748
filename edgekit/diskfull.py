"""Why a write failed, in one line: a full disk, a read-only one, no permission, no file handles.

A full disk does not always surface as OSError(ENOSPC): a library writing from C++ may leave a
truncated file that it then fails to read back (protobuf's DecodeError from onnx), or throw its
own error (torch's c10::Error, a RuntimeError). So a failure of any kind while writing is
checked against the disk it was writing to: if that disk is (nearly) full, the disk is named as
the cause, not the library's symptom.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from edgekit.errors import EdgekitError, Interrupted, excerpt

# Below this much free space, a failure while writing is taken to be the full disk's doing.
NEARLY_FULL = 1 << 20
NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
FIXES = {
    errno.EACCES: "permission denied: it needs write permission on that folder (or choose "
                  "another)",
    errno.EPERM: "operation not permitted: it needs write permission on that folder (or choose "
                 "another)",
    errno.EROFS: "it is on a read-only file system: it needs a writable one (or choose another "
                 "folder)",
    errno.EMFILE: "too many open files in this process: it needs more file handles (raise the "
                  "limit, e.g. ulimit -n 4096)",
    errno.ENFILE: "too many open files on this system: it needs more file handles (close other "
                  "programs, or raise fs.file-max)",
}


def write_failure(e: BaseException, folder: Path, staged: Path | None = None
                  ) -> EdgekitError | None:
    """The one-line error for `e`, raised while writing into `folder`, or None if `e` is not a
    failure to write (then it should propagate as it is).

    Args:
        staged: the temporary file or folder written so far, to say how much got written.
    """
    if isinstance(e, Interrupted) or not isinstance(e, Exception):
        return None
    # A write inside a staging folder failed first: name the user's folder instead.
    code = e.errno if isinstance(e, (OSError, WriteFailed)) else None
    if code in FIXES:
        return WriteFailed(f"cannot write into {str(folder)!r}: {FIXES[code]}", code)
    free = free_bytes(folder)
    if code in NO_SPACE or (free is not None and free < NEARLY_FULL):
        written = size(staged) if staged is not None else 0
        done = f" after {human(written)} was written" if written else ""
        return WriteFailed(
            f"cannot write into {str(folder)!r}: its disk is full ({human(free or 0)} free"
            f"{done}; more was needed): free some space or choose another folder"
            + _symptom(e), errno.ENOSPC)
    return None


class WriteFailed(EdgekitError):
    """A write failed for want of space, permission or file handles (`errno` says which)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.errno = code


def _symptom(e: BaseException) -> str:
    """What the library said, when it was not the plain OSError (kept short)."""
    if isinstance(e, (OSError, WriteFailed)):
        return ""
    return f" (the writer reported {type(e).__name__}: {excerpt(' '.join(str(e).split()), 80)})"


def free_bytes(folder: Path) -> int | None:
    """Bytes an unprivileged user may still write on `folder`'s file system (None: unknown)."""
    for p in (Path(folder), *Path(folder).parents):
        try:
            st = os.statvfs(p)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize
    return None


def size(path: Path) -> int:
    """Bytes in a file, or in every file under a folder (0 if gone)."""
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    except OSError:
        return 0


def human(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
