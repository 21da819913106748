"""Atomic writes: an artifact is either complete on disk or not there at all."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgekit.errors import EdgekitError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # name the file the user asked for, not the temporary one
        why = "a file stands where its folder should be" if isinstance(e, FileExistsError) \
            else e.strerror
        raise OSError(e.errno, f"cannot write there ({why})", str(path)) from None
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary files
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    """
    path = Path(path)
    if not replace and path.exists():
        raise EdgekitError(f"{str(path)!r} already exists; choose another name")
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(stage, 0o777 & ~_umask())
    old = None
    try:
        yield stage
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
