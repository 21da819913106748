"""tuned.json: what `edgekit tune` chose on this machine, and the checks that keep it honest.

    EXPORT_DIR/tuned.json
      kind, schema, created, edgekit_version
      machine       edgekit.machine.machine_info() of the machine that tuned
      settings      thread counts, seconds, rounds, batch, tolerances
      rule          how the choice is made (edgekit.tuning.RULE)
      table         one row per file and thread count: its output check, its timing
      skipped, refused, verdict
      choice        {"file", "threads", "sha256", "p50_ms", "ci95_ms", "why"}
      manifest_sha256   the manifest.json it was tuned against
      sha256        of the document without this key (canonical JSON)

Integrity, as the manifest's rule (edgekit.manifest): `predict`/`serve` of an export directory
refuse a tuned.json whose own checksum does not match (edited or damaged), one tuned against
another export (manifest.json changed since), or one whose chosen file is not listed in the
manifest or no longer has the sha256 it was tuned with. The checksums catch damage and edits,
not a forger who recomputes them: that needs a signature, which edgekit does not do.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from datetime import datetime, timezone
from pathlib import Path

from edgekit import __version__
from edgekit import manifest as mf
from edgekit.errors import EdgekitError, EdgekitWarning, excerpt
from edgekit.fileio import sha256, write_json
from edgekit.machine import usable_cores
from edgekit.manifest import FILE as MANIFEST
from edgekit.rundir import RunDir

FILE = "tuned.json"
KIND = "edgekit-tuned"
SCHEMA = 1


def export_dir(path: str | Path) -> Path:
    """The export directory for `path`: itself, or a run directory's export/.

    Raises:
        EdgekitError: neither holds a manifest.json.
    """
    path = Path(path)
    for folder in (path, RunDir(path).export):
        if (folder / MANIFEST).is_file():
            return folder
    raise EdgekitError(f"{str(path)!r} is not an export directory (no {MANIFEST}); expected "
                       "the folder `edgekit export` writes, or an artifact file")


def digest(doc: dict) -> str:
    """sha256 of the document without its own `sha256` key, as canonical JSON."""
    body = {k: v for k, v in doc.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write(export: Path, doc: dict) -> dict:
    """Add provenance and checksums to a tune result and write it as EXPORT/tuned.json.

    Returns:
        The document as written.
    """
    doc = {"kind": doc["kind"], "schema": doc["schema"], "edgekit_version": __version__,
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           **{k: v for k, v in doc.items() if k not in ("kind", "schema")}}
    doc["choice"]["sha256"] = sha256(export / doc["choice"]["file"])
    doc["manifest_sha256"] = sha256(export / MANIFEST)
    doc = json.loads(json.dumps(doc))  # tuples to lists: the checksum is of what is read back
    doc["sha256"] = digest(doc)
    write_json(export / FILE, doc)
    return doc


def read(export: str | Path) -> dict:
    """EXPORT/tuned.json, checked (see the module docstring).

    Raises:
        EdgekitError: no tuned.json (saying to run `edgekit tune` or name an artifact), or one
            that fails a check (one line saying which).
    """
    export = export_dir(export)
    path = export / FILE
    if not path.is_file():
        raise EdgekitError(f"{str(export)!r} has no {FILE}: run `edgekit tune {export}` on this "
                           f"machine, or name an artifact (e.g. {export / 'model.onnx'})")
    redo = f"run `edgekit tune {export}` again"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        ok = doc.get("kind") == KIND and doc.get("sha256") == digest(doc)
        choice = doc["choice"]
        file, threads = str(choice["file"]), choice["threads"]
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise EdgekitError(f"{str(path)!r} was edited or is damaged (its checksum does not "
                           f"match its content); {redo}")
    if not isinstance(doc.get("machine", {}), dict):
        raise EdgekitError(f"{str(path)!r} names the machine it was tuned on as "
                           f"{excerpt(doc['machine'])}; expected the object `edgekit tune` "
                           f"writes; {redo}")
    if not mf.safe_name(file):  # a file of the export, or of its candidates/ folder only
        raise EdgekitError(f"{str(path)!r} chooses {excerpt(file)}, a path, not a file of "
                           f"{str(export)!r}; {redo}")
    if doc.get("manifest_sha256") != sha256(export / MANIFEST):
        raise EdgekitError(f"{str(path)!r} was tuned against another export ({MANIFEST} has "
                           f"changed since); {redo}")
    manifest = mf.read(export / MANIFEST)
    listed = {**manifest["artifacts"], **(manifest.get("candidates") or {})}
    entry = listed.get(file)
    if not isinstance(entry, dict) or entry.get("sha256") != choice.get("sha256"):
        raise EdgekitError(f"{str(path)!r} chooses {file}, which is not listed in {MANIFEST} "
                           f"with the sha256 it was tuned with; {redo}")
    mf.check_sha256(export / file, choice["sha256"], listed_in=FILE, then=redo)
    if type(threads) is not int or threads < 1:
        raise EdgekitError(f"{str(path)!r} chooses {excerpt(threads)} threads; {redo}")
    if threads > usable_cores():
        raise EdgekitError(f"{str(path)!r} chooses {threads} threads; this machine has "
                           f"{usable_cores()} usable core(s): it was tuned elsewhere; {redo}")
    return doc


def resolve(path: str | Path, threads: int | None = None) -> tuple[Path, int | None, str]:
    """The artifact and thread count to run for `path`.

    An artifact file runs as given. A directory (an export, or a run holding one) runs the
    artifact its tuned.json chose, with the tuned thread count unless `threads` is given.

    Returns:
        (artifact path, threads, one line saying what was chosen; "" for a file).

    Raises:
        EdgekitError: a directory without a valid tuned.json (see `read`).
    """
    path = Path(path)
    if not path.is_dir():
        return path, threads, ""
    doc = read(path)
    export, choice = export_dir(path), doc["choice"]
    _warn_if_other_machine(doc)
    threads = threads or choice["threads"]
    return export / choice["file"], threads, (
        f"{choice['file']} with {threads} thread(s), as {FILE} chose on this machine")


def _warn_if_other_machine(doc: dict) -> None:
    from edgekit.machine import cpu_label, machine_info, same_cpu

    facts, there = machine_info(), doc.get("machine", {})
    if not same_cpu(facts, there):
        label = cpu_label(there) if there.get("cpu") else None
        warnings.warn(f"{FILE} was measured on {there.get('arch')} {label}; this is "
                      f"{facts['arch']} {cpu_label(facts)}: run `edgekit tune` here for a "
                      "choice that fits this CPU", EdgekitWarning, stacklevel=2)
