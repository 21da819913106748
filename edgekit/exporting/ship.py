"""`edgekit export --keep-candidates`: ship every checked int8 candidate for `edgekit tune`.

The host cannot time the device, so with --keep-candidates export publishes as usual and also
keeps, in the export directory:

    candidates/model.int8.LAYOUT.onnx   each int8 candidate that passed its check and was not
                                        published (the published one is model.int8.onnx)
    references.npz                      file -> the host's outputs of each shipped file (the
                                        published artifacts and the candidates) on samples.npz

and lists them in manifest.json: "candidates" (each with its size, sha256, layout and check)
and "references" (its sha256 and that of samples.npz, the inputs). A candidate that failed its
check is not shipped. A preset target (pi4, pi5, x86: not timed at export) then also writes
the layouts a local export on its architecture would time (`widen`), so the device has layouts
to choose from.
Every export drops the previous export's candidates, references and tuned.json: they describe
files this export may have replaced.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgekit.fileio import atomic_path, sha256
from edgekit.manifest import CANDIDATES, REFERENCES, SAMPLES, sample_outputs
from edgekit.tuned import FILE as TUNED


def widen(target):
    """A preset `target` with the int8 layouts a local export on its architecture would also
    try; `local` (timed here, at export) as it is."""
    from edgekit.exporting.int8.targets import local_target

    if target.tune:
        return target
    here = local_target({"arch": target.arch, "isa": {}, "cpu": target.description})
    return replace(target, static=tuple(dict.fromkeys(target.static + here.static)),
                   dynamic=tuple(dict.fromkeys(target.dynamic + here.dynamic)))


def keep(stage: Path, cands: list, on: bool, notes: list[str]) -> list:
    """Move the passing, unpublished candidates to stage/candidates/ (when `on`); drop the rest.

    Args:
        cands: edgekit.exporting.choose.Candidate of this export, after choosing.
        notes: the report's notes; a line is added saying what was shipped.

    Returns:
        The shipped candidates, their paths updated.
    """
    for stale in (stage / CANDIDATES, stage / REFERENCES, stage / TUNED):
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    scratch, shipped = stage / ".candidates", []
    for c in cands if on else []:
        if c.check.passed and not c.chosen and c.path.parent == scratch:
            (stage / CANDIDATES).mkdir(exist_ok=True)
            os.replace(c.path, stage / CANDIDATES / c.path.name)
            c.path = stage / CANDIDATES / c.path.name
            shipped.append(c)
    shutil.rmtree(scratch)
    if on:
        notes.append(f"shipped for `edgekit tune`: {len(shipped)} int8 candidate(s) in "
                     f"{CANDIDATES}/ and every file's outputs on {SAMPLES} in {REFERENCES}")
    return shipped


def record(stage: Path, final: list, shipped: list, on: bool) -> dict:
    """Write references.npz (the host's outputs on samples.npz, already in the stage); return
    the manifest's "candidates" and "references" entries, which `publish` writes once.

    Args:
        final: the published artifacts (Candidate); those that failed their check are left out.
        shipped: what `keep` returned.

    Returns:
        {"candidates": ..., "references": ...}, or {} when not `on`.
    """
    if not on:
        return {}
    from edgekit.exporting.report import manifest_entry
    from edgekit.runtime import load

    with np.load(stage / SAMPLES, allow_pickle=False) as z:
        x = z["x"]
    files = {c.fmt.file: c for c in final if c.check.passed}
    files.update({f"{CANDIDATES}/{c.path.name}": c for c in shipped})
    outputs = {name: sample_outputs(load(stage / name), x) for name in files}
    with atomic_path(stage / REFERENCES) as tmp, open(tmp, "wb") as f:
        np.savez(f, **outputs)
    candidates = {
        name: {**manifest_entry(c), "bytes": (stage / name).stat().st_size,
               "sha256": sha256(stage / name)}
        for name, c in files.items() if name.startswith(f"{CANDIDATES}/")}
    references = {"file": REFERENCES, "inputs": SAMPLES, "files": list(files),
                  "bytes": (stage / REFERENCES).stat().st_size,
                  "sha256": sha256(stage / REFERENCES), "inputs_sha256": sha256(stage / SAMPLES)}
    return {"candidates": candidates, "references": references}
