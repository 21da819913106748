"""scikit-learn's handwritten digits: 1,797 real 8x8 images shipped inside the package.

The offline default dataset: no download. Each 8x8 image (values 0-16) becomes an 8-bit
grayscale image, exactly what a user would save as a PNG, then goes through the same
preprocessing as any image on the Pi (resize to image_size, scale, normalize). A fixed,
stratified split holds data.test_fraction out (360 of 1,797 by default).
"""

from __future__ import annotations

import numpy as np

from edgekit.data.images import image_splits
from edgekit.data.splits import register_dataset
from edgekit.errors import EdgekitError


@register_dataset("digits")
def digits(cfg):
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
    return image_splits(([images[i] for i in idx_train], labels[idx_train]),
                        ([images[i] for i in idx_test], labels[idx_test]),
                        [str(d) for d in range(10)], cfg, native_mode="L")
