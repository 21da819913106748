"""The host -> device contract: what an export ships, its file names, the manifest, checksums.

An export directory holds, beside the artifacts:

    manifest.json    (FILE) input spec, preprocessing, labels, provenance; the size and sha256
                     of each artifact ("artifacts"), and with --keep-candidates of each shipped
                     int8 candidate ("candidates") and of the reference outputs ("references")
    samples.npz      (SAMPLES) held-out inputs x and labels y: `predict --sample`, tune's check
    candidates/      (CANDIDATES) the int8 candidates shipped for `edgekit tune`
    references.npz   (REFERENCES) file -> the host's outputs on samples.npz (sample_outputs)

The same manifest, without the per-file checksums, is embedded in each artifact (ONNX
`metadata_props`, TorchScript `_extra_files`), so a Pi needs nothing but the model file.
The export writes manifest.json once (`write`); everything that reads it goes through `read`.

The integrity rule: whenever a `manifest.json` beside an artifact lists that artifact, the
file's sha256 must match the listed one, or loading fails (`verify=False` overrides). A model
copied alone carries its embedded manifest but no checksum: keep manifest.json beside it to
detect damage. Every sha256 check says so in one wording (`check_sha256`). This module imports
neither torch nor onnx.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.fileio import not_a_file, sha256, write_json

FORMAT_VERSION = 1
EMBED_KEY = "edgekit.manifest"  # ONNX metadata_props key and TorchScript extra-file name
FILE = "manifest.json"
SAMPLES = "samples.npz"  # held-out inputs (x) and labels (y) an export ships
CANDIDATES = "candidates"  # the folder of shipped int8 candidates (--keep-candidates)
REFERENCES = "references.npz"  # file -> the host's outputs on SAMPLES (--keep-candidates)
REQUIRED = ("format_version", "task", "recipe", "model", "input", "preprocess")
DTYPES = ("float32", "int64")  # model input dtypes the runtime feeds (int64: token ids)


def make_manifest(*, recipe: str, model: str, task: str, input_name: str, input_shape: list,
                  preprocess: dict, labels: list[str], input_dtype: str = "float32",
                  state: dict | None = None, outputs: list | None = None) -> dict:
    """Build the embedded part of a manifest (everything but the per-file checksums).

    Args:
        input_shape: e.g. [None, 1, 32, 32]; None marks the dynamic batch dimension. A
            sequence model's fixed length is its second entry ([None, 5, 4]: 5 steps).
        input_dtype: "float32", or "int64" for token ids.
        state: a stateful model's hidden state, {"input": name, "output": name, "shape":
            [L, None, H]}: a second input and output the runtime carries between calls.
        preprocess: how raw input becomes the model's input (see runtime/preprocess/).
        outputs: named outputs packed into one row, [{"name", "shape"}] (task "raw").
    """
    manifest = {
        "format_version": FORMAT_VERSION,
        "edgekit_version": __version__,
        "task": task,
        "recipe": recipe,
        "model": model,
        "input": {"name": input_name, "shape": list(input_shape), "dtype": input_dtype},
        "preprocess": preprocess,
        "labels": [str(x) for x in labels],
    }
    if state is not None:
        manifest["state"] = state
    if outputs is not None:
        manifest["outputs"] = outputs
    validate(manifest, source="new manifest")
    return manifest


def validate(manifest: dict, source: str) -> dict:
    """Check the fields a runner relies on; the task and the preprocess kind check their own.

    Raises:
        EdgekitError: naming `source` and the first field that is missing or wrong.
    """
    from edgekit import preprocess_spec, tasks

    if not isinstance(manifest, dict):
        raise EdgekitError(f"{source}: manifest must be a JSON object, got "
                           f"{type(manifest).__name__}")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise EdgekitError(f"{source}: manifest is missing {', '.join(missing)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise EdgekitError(
            f"{source}: manifest format_version {manifest['format_version']!r} is not supported; "
            f"expected {FORMAT_VERSION} (upgrade edgekit)"
        )
    if manifest["task"] not in tasks.TASKS:
        raise EdgekitError(f"{source}: task {manifest['task']!r}; expected one of: "
                           f"{', '.join(tasks.TASKS.names())}")
    inp = manifest["input"]
    if not (isinstance(inp, dict) and isinstance(inp.get("name"), str)
            and isinstance(inp.get("shape"), list)
            and all(d is None or isinstance(d, str) or (type(d) is int and d > 0)
                    for d in inp["shape"])
            and inp.get("dtype") in DTYPES):
        raise EdgekitError(f"{source}: manifest input must give name, shape (ints, null for "
                           f"dynamic) and dtype ({', '.join(DTYPES)}); got {inp!r}")
    state = manifest.get("state")
    if state is not None and not (
            isinstance(state, dict) and isinstance(state.get("input"), str)
            and isinstance(state.get("output"), str) and isinstance(state.get("shape"), list)
            and len(state["shape"]) == 3 and state["shape"][1] is None
            and all(type(d) is int and d > 0 for d in state["shape"][::2])):
        raise EdgekitError(f"{source}: manifest state must give input, output and shape "
                           f"[layers, null, hidden]; got {state!r}")
    tasks.get_task(manifest["task"]).validate(manifest, source)
    preprocess_spec.validate(manifest["preprocess"], source)
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


def write(folder: Path, manifest: dict) -> Path:
    """Write FOLDER/manifest.json (whole or not at all); an export calls this once.

    Returns:
        The path written.
    """
    path = Path(folder) / FILE
    write_json(path, manifest)
    return path


def check_sha256(path: Path, digest: str, listed_in: str = FILE,
                 then: str = "copy or export it again") -> None:
    """The one integrity check: `path` exists and its sha256 is `digest`.

    Args:
        listed_in: the file that lists `digest` (manifest.json, tuned.json), for the message.
        then: what to do about it, ending the message.

    Raises:
        EdgekitError: the file is missing, or its sha256 differs (damaged or replaced).
    """
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"{str(path)!r} is listed in {listed_in} but {not_a_file(path)}; "
                           "copy the whole export directory again")
    if sha256(path) != digest:
        raise EdgekitError(f"{str(path)!r} does not match the sha256 in {listed_in}: the file "
                           f"is damaged or was replaced; {then}")


def sample_outputs(runner, x):
    """A runner's outputs on `x` (N, ...), the same way on the host (export writes
    REFERENCES) and on the device (tune checks against them).

    A stateful model reads the rows in order as one stream, as `edgekit predict` does.

    Returns:
        np.ndarray (N, ...) of the outputs.
    """
    import numpy as np

    runner.reset()
    if runner.stateful:
        return np.concatenate([runner.run(x[i:i + 1]) for i in range(len(x))])
    return np.concatenate([runner.run(x[i:i + 256]) for i in range(0, len(x), 256)])


def from_json(text: str, source: str) -> dict:
    """Parse and validate a manifest. Raises EdgekitError naming `source` if it is not one."""
    if not text.strip():
        raise EdgekitError(f"{source} is empty; expected the JSON manifest `edgekit export` "
                           "writes")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as e:
        raise EdgekitError(f"{source}: manifest is not valid JSON ({e})") from None
    return validate(manifest, source)


def read(path: Path) -> dict:
    """Read and validate a manifest.json, with its `artifacts` table checked too."""
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"manifest {str(path)!r} {not_a_file(path)}; expected the "
                           f"{FILE} that `edgekit export` writes")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise EdgekitError(f"{str(path)}: manifest is not UTF-8 text ({e})") from None
    manifest = from_json(text, str(path))
    artifacts = manifest.get("artifacts")
    if not (isinstance(artifacts, dict) and all(
            isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in artifacts.values())):
        raise EdgekitError(f"{str(path)}: manifest artifacts must map each file name to its "
                           "sha256 and size")
    return manifest


def beside(artifact: Path, verify: bool = True) -> dict | None:
    """The manifest.json next to an artifact, if it lists that file; None otherwise.

    Args:
        verify: check the artifact's sha256 against the listed one (the integrity rule).

    Raises:
        EdgekitError: the manifest is damaged, or (verify=True) the artifact is listed but its
            sha256 differs (the file is damaged or was replaced).
    """
    artifact = Path(artifact)
    path = artifact.with_name(FILE)
    if not path.is_file():
        return None
    try:
        manifest = read(path)
    except EdgekitError as e:
        if not verify:
            return None  # told not to check: a damaged manifest.json is ignored, not trusted
        raise EdgekitError(f"{e}; it sits beside {artifact.name}, so its checksum cannot be "
                           "checked: fix or remove it, or pass --no-verify") from None
    entry = manifest["artifacts"].get(artifact.name)
    if entry is None:
        return None
    if verify:
        check_sha256(artifact, entry["sha256"],
                     then="copy or export it again (or pass --no-verify to load it anyway)")
    return manifest


def verify_export(folder: str | Path) -> list[dict]:
    """Check every artifact that an export's manifest.json lists against its size and sha256.

    Args:
        folder: an export directory, its manifest.json, or one artifact in it.

    Returns:
        One row per listed artifact: {"file", "bytes", "status", "why"}; status is "ok",
        "missing" or "mismatch". Also a row with status "unlisted" for each model file in the
        folder that the manifest does not list (not a failure: it is simply not covered).

    Raises:
        EdgekitError: no manifest.json, or one that is empty or malformed.
    """
    folder = Path(folder)
    only = None  # an artifact given instead of a folder: check that one file
    if folder.is_file() and folder.name != FILE:
        only, folder = folder.name, folder.parent
    path = folder if folder.name == FILE and folder.is_file() else folder / FILE
    if not folder.exists():
        raise EdgekitError(f"export directory {str(folder)!r} does not exist")
    if folder.is_dir() and not path.is_file():
        raise EdgekitError(f"{str(folder)!r} has no {FILE}; expected an export directory "
                           "written by `edgekit export`")
    manifest = read(path)
    rows = []
    listed = manifest["artifacts"]
    if only is not None:
        if only not in listed:
            raise EdgekitError(f"{only} is not listed in {str(path)!r}; nothing to verify it "
                               "against")
        listed = {only: listed[only]}
    for name, entry in listed.items():
        file = path.with_name(name)
        if Path(name).name != name:  # a manifest must not point outside its folder
            rows.append({"file": name, "bytes": None, "status": "mismatch",
                         "why": "listed name is a path, not a file in this folder"})
        elif not file.is_file():
            rows.append({"file": name, "bytes": None, "status": "missing",
                         "why": f"listed in {FILE} but {not_a_file(file)}"})
        elif file.stat().st_size != entry.get("bytes", file.stat().st_size) \
                or sha256(file) != entry["sha256"]:
            rows.append({"file": name, "bytes": file.stat().st_size, "status": "mismatch",
                         "why": f"sha256 differs from {FILE}: damaged or replaced"})
        else:
            rows.append({"file": name, "bytes": file.stat().st_size, "status": "ok", "why": ""})
    from edgekit.formats import backends  # the suffixes of model files

    suffixes = backends()
    for file in sorted(path.parent.iterdir()) if only is None else []:
        if file.suffix in suffixes and file.is_file() and file.name not in manifest["artifacts"]:
            rows.append({"file": file.name, "bytes": file.stat().st_size, "status": "unlisted",
                         "why": f"not listed in {FILE}: not covered by a checksum"})
    return rows
