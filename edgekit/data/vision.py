"""torchvision's MNIST, Fashion-MNIST and CIFAR-10: read from data.root, downloaded if allowed.

    --set data.root=DIR        where the dataset is (torchvision's layout: DIR/MNIST/raw/...,
                               DIR/FashionMNIST/raw/..., DIR/cifar-10-batches-py/...)
    --set data.download=never  never touch the network (tests, air-gapped machines)

MNIST and Fashion-MNIST may also be the four .gz files as published (DIR/MNIST/raw/*.gz):
torchvision unpacks them only while downloading, so edgekit unpacks them offline, after the
md5 check torchvision makes on a download (unpack_published).

torchvision's own checks stay on: CIFAR-10's files must match their md5 sums (a copy re-packed
on purpose can say which sums it has through CIFAR10_CHECKSUMS, never by skipping the check).
Offline, a download fails within seconds (the host is probed with a timeout first) and the
error names the folder looked in and how to get the data; a recipe that names a fallback
trains on that instead (edgekit.data.build_dataset).
"""

from __future__ import annotations

import gzip
import shutil
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from edgekit.data.images import Images, image_splits
from edgekit.data.splits import DataUnavailable, register_dataset
from edgekit.errors import one_line
from edgekit.fileio import atomic_path

TIMEOUT = 5.0  # seconds to reach a download host before calling the network unreachable
# CIFAR-10 file name -> md5 replacing torchvision's (for a copy whose sums are known to differ).
CIFAR10_CHECKSUMS: dict[str, str] = {}


@register_dataset("mnist")
def mnist(cfg):
    import torchvision

    return _grayscale(torchvision.datasets.MNIST, "MNIST", cfg, [str(d) for d in range(10)])


@register_dataset("fashion-mnist")
def fashion_mnist(cfg):
    import torchvision

    cls = torchvision.datasets.FashionMNIST
    return _grayscale(cls, "Fashion-MNIST", cfg, list(cls.classes))


@register_dataset("cifar10")
def cifar10(cfg):
    from PIL import Image

    cls = cifar10_class(CIFAR10_CHECKSUMS)
    train, test = (_open(cls, "CIFAR-10", cfg, split) for split in (True, False))
    pixels = [ds.data for ds in (train, test)]  # (N, 32, 32, 3) uint8

    def images(a: np.ndarray) -> Images:
        return Images(len(a), lambda i: Image.fromarray(a[i], mode="RGB"))

    return image_splits((images(pixels[0]), np.asarray(train.targets)),
                        (images(pixels[1]), np.asarray(test.targets)),
                        list(train.classes), cfg, native_mode="RGB")


def cifar10_class(checksums: dict[str, str]):
    """torchvision's CIFAR10, with the md5 sums of the files named in `checksums` replaced."""
    import torchvision

    base = torchvision.datasets.CIFAR10
    if not checksums:
        return base

    def sums(files):
        return [[name, checksums.get(name, md5)] for name, md5 in files]

    return type("CIFAR10", (base,), {
        "train_list": sums(base.train_list), "test_list": sums(base.test_list),
        "meta": {**base.meta, "md5": checksums.get(base.meta["filename"], base.meta["md5"])},
    })


def _grayscale(cls, title: str, cfg, labels: list[str]):
    from PIL import Image

    train, test = (_open(cls, title, cfg, split) for split in (True, False))

    def images(ds) -> Images:
        pixels = ds.data.numpy()  # (N, 28, 28) uint8
        return Images(len(pixels), lambda i: Image.fromarray(pixels[i], mode="L"))

    return image_splits((images(train), train.targets.numpy()),
                        (images(test), test.targets.numpy()), labels, cfg, native_mode="L")


def _open(cls, title: str, cfg, train: bool):
    """cls(root, train) from disk, downloading it first if it is missing and allowed.

    Raises:
        DataUnavailable: not on disk (or failing its checks) and not downloadable.
    """
    root = Path(cfg.root)
    where = root / cls.base_folder if hasattr(cls, "base_folder") else root / cls.__name__ / "raw"
    unpack_published(cls, where)
    try:
        return cls(str(root), train=train, download=False)
    except RuntimeError as e:
        missing = " ".join(str(e).split())
    if cfg.download == "never":
        raise DataUnavailable(f"{title} is not in {str(where)!r} ({missing.split('.')[0]}) and "
                              "data.download is never; put a copy there (--set data.root=DIR) or "
                              "allow the download (--set data.download=auto)")
    url = (getattr(cls, "mirrors", None) or [getattr(cls, "url", "")])[0]
    reason = _unreachable(url)
    if reason is None:
        try:
            with _socket_timeout(60):
                return cls(str(root), train=train, download=True)
        except (OSError, RuntimeError) as e:
            reason = one_line(e, 200)
    raise DataUnavailable(f"{title} is not in {str(where)!r} and the download failed ({reason});"
                          " download it on a machine with internet access and copy it there, or "
                          "--set data.root=DIR where a copy is")


def unpack_published(cls, raw: Path) -> list[Path]:
    """Gunzip the published .gz files of `cls` (an MNIST-style torchvision class) found in `raw`.

    torchvision reads only the unpacked IDX files and unpacks the .gz ones only as part of a
    download; a copy of the .gz files as published is unpacked here without the network. Each
    must pass the md5 check torchvision makes on a download; an unpacked file already there is
    left alone (torchvision reads it as it is).

    Args:
        cls: a torchvision dataset class; those without `resources` (CIFAR-10) are skipped.
        raw: the folder torchvision reads the IDX files from (ROOT/MNIST/raw).

    Returns:
        The files unpacked.

    Raises:
        DataUnavailable: a .gz file whose md5 is not the published file's.
    """
    from torchvision.datasets.utils import check_integrity

    unpacked = []
    for filename, md5 in getattr(cls, "resources", []):
        packed, target = raw / filename, raw / Path(filename).stem  # stem: the name without .gz
        if target.exists() or not packed.is_file():
            continue
        if not check_integrity(str(packed), md5):
            raise DataUnavailable(f"{str(packed)!r} is not the published file (its md5 is not "
                                  f"{md5}); put the published file there, or gunzip this one in "
                                  "place to use it as it is")
        with atomic_path(target) as tmp, gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        unpacked.append(target)
    return unpacked


def _unreachable(url: str) -> str | None:
    """None if `url`'s host accepts a connection within TIMEOUT, else why not."""
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    if not host:
        return "no download address"
    result: list[str | None] = ["no answer"]

    def probe():  # in a thread: a name lookup that hangs is bounded too
        try:
            socket.create_connection((host, port), timeout=TIMEOUT).close()
            result[0] = None
        except OSError as e:
            result[0] = f"cannot reach {host}: {e.strerror or e}"

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(TIMEOUT + 1)
    return result[0] if not thread.is_alive() else f"cannot reach {host} within {TIMEOUT:.0f} s"


@contextmanager
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)  # urllib in torchvision sets none: a stalled read hangs
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)
