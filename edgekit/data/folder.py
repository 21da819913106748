"""ImageFolder: a folder of class folders, the layout torchvision reads.

    data.root/cat/001.jpg, data.root/dog/002.png, ...         one folder, split by
                                                              data.test_fraction (stratified)
    data.root/train/cat/..., data.root/val/cat/... (or test/)  the split the folders give

Images are read lazily from disk. `data.resize` + `data.image_size` give torchvision's
Resize(resize) + CenterCrop(image_size), recorded in the preprocess spec so the runtime
prepares a photo the same way; `data.normalize: imagenet` matches pretrained backbones.
"""

from __future__ import annotations

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


def _scan(folder: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(image files, class indices, class names) of a folder of class folders."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        labels, index = find_classes(str(folder))
        samples = make_dataset(str(folder), index, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:  # no class folders, or a class folder without images
        raise DataUnavailable(f"{str(folder)!r}: {' '.join(str(e).split())}; {HOW}") from None
    if len(labels) < 2:
        raise EdgekitError(f"{str(folder)!r} has {len(labels)} class folder; expected at least 2")
    files = [path for path, _ in samples]
    return files, np.array([c for _, c in samples], dtype=np.int64), labels


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
