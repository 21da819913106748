"""edgekit: from a PyTorch training recipe, or a model you trained elsewhere, to fast int8
inference on a Raspberry Pi.

The public API (edgekit.api) is imported on first use, so `import edgekit` stays fast and
needs neither torch nor onnx: `edgekit.train`, `edgekit.import_model`, `edgekit.export`,
`edgekit.load`, `edgekit.tune`, `edgekit.bench`, and the `Run` and `Export` they return.
"""

__version__ = "0.1.0"

__all__ = ["Export", "Run", "bench", "export", "import_model", "load", "train", "tune"]


def __getattr__(name: str):
    if name in __all__:  # by module string: the package itself depends on nothing below it
        import importlib

        return getattr(importlib.import_module("edgekit.api"), name)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
