"""ImageFolder: a folder of class folders, the layout torchvision reads.

    data.root/cat/001.jpg, data.root/dog/002.png, ...         one folder, split by
                                                              data.test_fraction (stratified)
    data.root/train/cat/..., data.root/val/cat/... (or test/)  the split the folders give

`imagefiles` reads a flat folder of unlabeled images (what a user has for a model trained
elsewhere): every image gets label 0 of one label, and export checks int8 by agreement with
the fp32 model instead of accuracy (`edgekit import`). Neither builder imports torch.

Images are read lazily from disk. `data.resize` + `data.image_size` give torchvision's
Resize(resize) + CenterCrop(image_size), recorded in the preprocess spec so the runtime
prepares a photo the same way; `data.normalize: imagenet` matches pretrained backbones.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgekit.data.images import Images, image_splits
from edgekit.data.splits import DataUnavailable, register_dataset
from edgekit.errors import EdgekitError

HOW = ("expected a folder of class folders (DIR/cat/*.jpg, DIR/dog/*.jpg) or DIR/train and "
       "DIR/val; --set data.root=DIR")


@register_dataset("imagefolder")
def imagefolder(cfg):
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataUnavailable(f"no image folder at {str(root)!r}; {HOW}")
    held_out = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if (root / "train").is_dir() and held_out is not None:
        files, y, labels = _scan(root / "train")
        test_files, test_y, test_labels = _scan(held_out)
        if test_labels != labels:
            raise EdgekitError(f"{str(held_out)!r} has classes {test_labels}, but "
                               f"{str(root / 'train')!r} has {labels}; expected the same")
        train_idx, test_idx = np.arange(len(y)), None
    else:
        files, y, labels = _scan(root)
        train_idx, test_idx = _split(y, cfg)
        test_files, test_y = [files[i] for i in test_idx], y[test_idx]
    train_files = [files[i] for i in train_idx]
    return image_splits((_images(train_files), y[train_idx]), (_images(test_files), test_y),
                        labels, cfg, native_mode="RGB")


@register_dataset("imagefiles")
def imagefiles(cfg):
    root = Path(cfg.root)
    files = image_files(root)
    if not files:
        raise DataUnavailable(f"no images in {str(root)!r}; expected a folder of image files "
                              f"({', '.join(IMG_EXTENSIONS)}) or of class folders")
    y = np.zeros(len(files), dtype=np.int64)
    order = np.random.default_rng(cfg.split_seed).permutation(len(files))
    n_test = min(len(files) - 1, max(1, round(len(files) * cfg.test_fraction)))
    if n_test < 1:
        raise EdgekitError(f"{str(root)!r} holds 1 image; expected at least 2 (one to "
                           "calibrate int8 on, one to check it on)")
    train_idx, test_idx = np.sort(order[n_test:]), np.sort(order[:n_test])
    return image_splits((_images([files[i] for i in train_idx]), y[train_idx]),
                        (_images([files[i] for i in test_idx]), y[test_idx]),
                        ["image"], cfg, native_mode="RGB")


# The suffixes torchvision's ImageFolder reads (torchvision.datasets.folder.IMG_EXTENSIONS).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def image_files(folder: Path) -> list[str]:
    """The image files directly in `folder`, sorted (hidden files left out)."""
    return sorted(str(p) for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMG_EXTENSIONS) if folder.is_dir() else []


def class_folders(folder: Path) -> list[str]:
    """The class folders of an ImageFolder root, sorted (torchvision's find_classes order)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir()) if folder.is_dir() else []


def _scan(folder: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(image files, class indices, class names) of a folder of class folders, in
    torchvision's order (classes sorted, each class's files walked in sorted order)."""
    labels = class_folders(folder)
    if not labels:
        raise DataUnavailable(f"{str(folder)!r}: no class folders; {HOW}")
    files, y = [], []
    for index, name in enumerate(labels):
        found = [str(Path(d) / f) for d, _, fs in sorted(os.walk(folder / name, followlinks=True))
                 for f in sorted(fs) if f.lower().endswith(IMG_EXTENSIONS)]
        if not found:
            raise DataUnavailable(f"{str(folder / name)!r}: no images (expected "
                                  f"{', '.join(IMG_EXTENSIONS)}); {HOW}")
        files += found
        y += [index] * len(found)
    if len(labels) < 2:
        raise EdgekitError(f"{str(folder)!r} has {len(labels)} class folder; expected at least 2")
    return files, np.array(y, dtype=np.int64), labels


def _split(y: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(np.arange(len(y)), test_size=cfg.test_fraction,
                                random_state=cfg.split_seed, stratify=y)
    except ValueError as e:  # too few images to hold every class out
        raise EdgekitError(f"data.test_fraction={cfg.test_fraction} does not split the "
                           f"{len(y)} images into train and test with every class in both: "
                           f"{e}") from None


def _images(files: list[str]) -> Images:
    from edgekit.runtime.preprocess import load_image

    return Images(len(files), lambda i: load_image(files[i]))
