"""The contract each artifact carries: input spec, preprocessing, labels, provenance.

The same manifest is written as `manifest.json` beside the artifacts (with the sha256 and size
of each file) and embedded in each artifact (ONNX `metadata_props`, TorchScript `_extra_files`),
so a Pi needs nothing but the model file. This module imports neither torch nor onnx.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.fileio import sha256
from edgekit.tasks import TASKS

FORMAT_VERSION = 1
EMBED_KEY = "edgekit.manifest"  # ONNX metadata_props key and TorchScript extra-file name
REQUIRED = ("format_version", "task", "recipe", "model", "input", "preprocess", "labels")
PREPROCESS_KEYS = {"image": ("mode", "size", "resample", "scale", "mean", "std")}


def make_manifest(*, recipe: str, model: str, task: str, input_name: str, input_shape: list,
                  preprocess: dict, labels: list[str]) -> dict:
    """Build the embedded part of a manifest (everything but the per-file checksums).

    Args:
        input_shape: e.g. [None, 1, 32, 32]; None marks the dynamic batch dimension.
        preprocess: how raw input becomes the model's input (see runtime/preprocess.py).
    """
    manifest = {
        "format_version": FORMAT_VERSION,
        "edgekit_version": __version__,
        "task": task,
        "recipe": recipe,
        "model": model,
        "input": {"name": input_name, "shape": list(input_shape), "dtype": "float32"},
        "preprocess": preprocess,
        "labels": [str(x) for x in labels],
    }
    validate(manifest, source="new manifest")
    return manifest


def validate(manifest: dict, source: str) -> dict:
    """Check the fields a runner relies on. Raises EdgekitError naming what is wrong."""
    if not isinstance(manifest, dict):
        raise EdgekitError(f"{source}: manifest must be a JSON object")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise EdgekitError(f"{source}: manifest is missing {', '.join(missing)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise EdgekitError(
            f"{source}: manifest format_version {manifest['format_version']!r} is not supported; "
            f"expected {FORMAT_VERSION} (upgrade edgekit)"
        )
    if manifest["task"] not in TASKS:
        raise EdgekitError(f"{source}: task {manifest['task']!r}; expected one of "
                           f"{', '.join(TASKS.names())}")
    inp = manifest["input"]
    if not (isinstance(inp, dict) and isinstance(inp.get("name"), str)
            and isinstance(inp.get("shape"), list) and inp.get("dtype") == "float32"):
        raise EdgekitError(f"{source}: manifest input must give name, shape and dtype float32")
    labels = manifest["labels"]
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
        raise EdgekitError(f"{source}: manifest labels must be a non-empty list of strings")
    pre = manifest["preprocess"]
    if not isinstance(pre, dict) or pre.get("kind") not in PREPROCESS_KEYS:
        raise EdgekitError(f"{source}: manifest preprocess kind must be one of "
                           f"{', '.join(PREPROCESS_KEYS)}")
    missing = [k for k in PREPROCESS_KEYS[pre["kind"]] if k not in pre]
    if missing:
        raise EdgekitError(f"{source}: manifest preprocess is missing {', '.join(missing)}")
    return manifest


def with_files(manifest: dict, folder: Path, files: dict[str, dict]) -> dict:
    """Return the on-disk manifest: the embedded one plus size and sha256 of each artifact.

    Args:
        files: artifact file name -> {"format": ..., "precision": ...}.
    """
    out = dict(manifest)
    out["artifacts"] = {
        name: {**info, "bytes": (folder / name).stat().st_size, "sha256": sha256(folder / name)}
        for name, info in files.items()
    }
    return out


def from_json(text: str, source: str) -> dict:
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as e:
        raise EdgekitError(f"{source}: manifest is not valid JSON ({e})") from None
    return validate(manifest, source)


def beside(artifact: Path) -> dict | None:
    """The manifest.json next to an artifact, if it lists that file; None otherwise.

    Raises:
        EdgekitError: the file is listed but its sha256 differs (damaged or replaced).
    """
    artifact = Path(artifact)
    path = artifact.with_name("manifest.json")
    if not path.is_file():
        return None
    manifest = from_json(path.read_text(encoding="utf-8"), str(path))
    entry = manifest.get("artifacts", {}).get(artifact.name)
    if entry is None:
        return None
    if entry.get("sha256") != sha256(artifact):
        raise EdgekitError(f"{str(artifact)!r} does not match the sha256 in {path.name}: the "
                           "file is damaged or was replaced; copy or export it again")
    return manifest
