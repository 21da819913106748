"""Atomic writes: an artifact is either complete on disk or not there at all.

Temporary files and staging folders are named `.NAME.PID.XXXXXXXX.tmp` beside their target:
they are removed when the block ends, however it ends, and one left by a process that was
killed (its PID no longer running) is removed by the next write to the same target. A write
that fails because the disk is full, read-only or not ours, or because too many files are open,
fails as one line naming the folder and what it needed (see `edgekit.diskfull`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgekit.diskfull import write_failure
from edgekit.errors import EdgekitError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    Raises:
        EdgekitError: the write failed for want of space, permission or file handles (named).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(path)
        fd, tmp = tempfile.mkstemp(prefix=_stage_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as e:  # name the file the user asked for, not the temporary one
        failure = write_failure(e, path.parent)
        if failure is not None:
            raise failure from None
        why = "a file stands where its folder should be" if isinstance(e, FileExistsError) \
            else e.strerror
        raise OSError(e.errno, f"cannot write there ({why})", str(path)) from None
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary files
    try:
        yield tmp
        os.replace(tmp, path)
    except Exception as e:
        failure = write_failure(e, path.parent, tmp)
        if failure is None:
            raise
        raise failure from None
    finally:
        tmp.unlink(missing_ok=True)


def _stage_prefix(path: Path) -> str:
    """`.NAME.PID.`: the PID tells a later write whether the process that made it still runs."""
    return f".{path.name}.{os.getpid()}."


def remove_stale(path: Path) -> list[Path]:
    """Remove the temporary files and staging folders beside `path` that a killed process left.

    Only those whose process (the PID in the name) no longer runs: a concurrent writer's stage
    is left alone. Names without a PID (older edgekit) go once they are a day old. A previous
    `path` moved aside by atomic_dir (`.NAME.old-PID`) is put back if no `path` replaced it.

    Returns:
        The paths removed.
    """
    import time

    removed = []
    for p in path.parent.glob(f".{glob.escape(path.name)}.*"):
        rest = p.name[len(path.name) + 2:]  # "PID.XXXXXXXX.tmp" or "old-PID"
        pid = rest.removeprefix("old-").split(".", 1)[0]
        if not (rest.endswith(".tmp") or rest.startswith("old-")):
            continue
        if pid.isdigit():
            if int(pid) == os.getpid() or _running(int(pid)):
                continue
        else:
            try:
                if time.time() - p.lstat().st_mtime < 86400:
                    continue
            except OSError:
                continue
        if rest.startswith("old-") and not path.exists():
            os.replace(p, path)  # killed between moving the old one aside and the new in
        elif p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_text(obj) -> str:
    """How edgekit writes JSON files: indented, keys in insertion order, newline at the end."""
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json_text(obj))


def not_a_file(path: Path) -> str:
    """Why `path`, which is not a regular file, can't be read as one."""
    return "is not a file" if path.exists() else "does not exist"


@contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a staging directory that becomes `path` only if the block succeeds.

    With replace=True an existing `path` is swapped out and removed after the new one is in
    place, so a failure at any point leaves either the old directory or the new one, never a
    mix. With replace=False an existing `path` is an error, checked before and after the block.

    Raises:
        EdgekitError: the write failed for want of space, permission or file handles (named).
    """
    path = Path(path)
    if not replace and path.exists():
        raise EdgekitError(f"{str(path)!r} already exists; choose another name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(path)
        stage = Path(tempfile.mkdtemp(prefix=_stage_prefix(path), suffix=".tmp",
                                      dir=path.parent))
    except OSError as e:
        failure = write_failure(e, path.parent)
        if failure is None:
            raise
        raise failure from None
    os.chmod(stage, 0o777 & ~_umask())
    old = None
    try:
        try:
            yield stage
        except Exception as e:  # a full disk surfaces as OSError, or as a library's own error
            failure = write_failure(e, path.parent, stage)
            if failure is None:
                raise
            raise failure from None
        if not replace:
            try:
                os.mkdir(path)  # claim the name: fails if another process took it meanwhile
            except FileExistsError:
                raise EdgekitError(f"{str(path)!r} appeared while this ran; not replacing it") \
                    from None
        elif path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(stage, path)  # rename(2) may replace the empty directory claimed above
    except BaseException:
        if old is not None and not path.exists():
            os.replace(old, path)  # put the previous directory back
            old = None
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def exclusive(lock: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file `lock` (created if missing) for the block; while
    another process holds it, say so on stderr once and wait for it.

    The kernel drops the lock when its holder exits, even on SIGKILL: a dead export never
    leaves a stale lock behind.

    Args:
        what: what the holder is doing, for the waiting line ("an export of runs/x").

    Raises:
        EdgekitError: the lock file cannot be created (named, with the reason).
    """
    import fcntl
    import sys

    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise EdgekitError(f"cannot create the lock file {str(lock)!r}: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting: {what} is running in another process", file=sys.stderr,
                  flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
