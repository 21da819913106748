"""Dataset registry: `@register_dataset("name")` on a builder `(DataConfig) -> DataSplits`.

A dataset hands out model-ready numpy arrays prepared by `edgekit.runtime.preprocess`, plus the
preprocessing spec itself, so training and the runtime prepare inputs identically.

    digits         scikit-learn's 8x8 digits, shipped inside the package: the offline default
    mnist, fashion-mnist, cifar10   torchvision's, from data.root or downloaded
    imagefolder    a folder of class folders at data.root (imagefiles: a flat, unlabeled one)
    arrayfolder    .npy inputs at data.root (noise: random inputs, no data at all)

An installed package adds its own datasets under the `edgekit.datasets` entry-point group (the
entry point is a builder); a recipe names them like any other.

A builder whose data are neither on disk nor downloadable raises DataUnavailable; when the
recipe names a `data.fallback`, `build_dataset` builds that instead and says why in
`DataSplits.note`.
"""

from __future__ import annotations

from edgekit.data.splits import (  # noqa: F401  (the package's face)
    DATASETS,
    ArraySplit,
    DataSplits,
    DataUnavailable,
    register_dataset,
)


def build_dataset(cfg) -> DataSplits:
    """Build the dataset named by `cfg.name` (a DataConfig), or its fallback if it can't be had.

    Raises:
        EdgekitError: unknown name (listing the choices), or data neither on disk nor
            downloadable with no fallback named (DataUnavailable: names where it looked).
    """
    builder = dataset_builder(cfg.name)
    try:
        data = builder(cfg)
    except DataUnavailable as e:
        if not cfg.fallback or cfg.fallback == cfg.name:
            raise
        data = DATASETS.get(cfg.fallback)(cfg)
        data.name = cfg.fallback
        data.note = (f"{e}; training on the offline {cfg.fallback} dataset instead, as "
                     f"the recipe's data.fallback says")
    data.name = data.name or cfg.name
    return data


def dataset_builder(name: str):
    """The registered builder, else an `edgekit.datasets` entry point's; else the registry's
    error listing the valid names."""
    if name not in DATASETS:
        from importlib.metadata import entry_points

        found = {ep.name: ep for ep in entry_points(group="edgekit.datasets")}
        if name in found:
            return found[name].load()
    return DATASETS.get(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


# Builders register themselves on import.
from edgekit.data import arrays, digits, folder, generated, text, uci, vision  # noqa: E402, F401
