"""scikit-learn's handwritten digits: 1,797 real 8x8 images shipped inside the package.

The offline default dataset: no download. Each 8x8 image (values 0-16) becomes an 8-bit
grayscale image, exactly what a user would save as a PNG, then goes through the same
preprocessing as any image on the Pi (resize to image_size, scale, normalize).
"""

from __future__ import annotations

import numpy as np

from edgekit.data import ArraySplit, DataSplits, register_dataset
from edgekit.errors import EdgekitError
from edgekit.runtime.preprocess import image_spec, image_to_array


@register_dataset("digits")
def digits(cfg) -> DataSplits:
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    pixels = np.round(bunch.images * (255 / 16)).astype(np.uint8)  # (1797, 8, 8)
    labels = bunch.target.astype(np.int64)
    try:
        idx_train, idx_test = train_test_split(
            np.arange(len(labels)), test_size=cfg.test_fraction, random_state=cfg.split_seed,
            stratify=labels,
        )
    except ValueError as e:  # a split too small to hold every class
        raise EdgekitError(f"data.test_fraction={cfg.test_fraction} does not split the "
                           f"{len(labels)} digits into train and test: {e}") from None
    images = [Image.fromarray(p) for p in pixels]
    size = (cfg.image_size, cfg.image_size)

    # Mean/std of the training images after resizing and scaling to [0, 1].
    plain = image_spec("L", size, mean=[0.0], std=[1.0])
    train_plain = np.stack([image_to_array(images[i], plain) for i in idx_train])
    spec = image_spec("L", size, mean=[round(float(train_plain.mean()), 4)],
                      std=[round(float(train_plain.std()), 4)])

    def split(idx: np.ndarray) -> ArraySplit:
        x = np.stack([image_to_array(images[i], spec) for i in idx])  # (N, 1, S, S)
        return ArraySplit(x=x, y=labels[idx], images=[images[i] for i in idx])

    return DataSplits(train=split(idx_train), test=split(idx_test),
                      labels=[str(d) for d in range(10)], preprocess=spec)
