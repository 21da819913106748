"""What a re-export keeps of the previous export: every file it does not rebuild, re-checked."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from edgekit.manifest import FILE as MANIFEST
from edgekit.manifest import SAMPLES
from edgekit.rundir import BENCH, REPORT, REPORT_MD

REWRITTEN = (MANIFEST, REPORT, REPORT_MD, SAMPLES,  # by every export
             "sensitivity.png")  # sensitivity*.png: drawn for report.md by each int8 export


def keep_previous(old: Path, stage: Path, rebuild: set[str]) -> list[str]:
    """Link the previous export's files into the stage, except those this export rewrites."""
    kept = []
    if not old.is_dir():
        return kept
    for f in sorted(old.iterdir()):
        if f.name in rebuild or f.name in REWRITTEN or f.name.startswith((".", "sensitivity")):
            continue
        if f.is_dir():
            shutil.copytree(f, stage / f.name, copy_function=_link_or_copy)
        else:
            _link_or_copy(f, stage / f.name)
        kept.append(f.name)
    return kept


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)  # the old folder is removed once the new one is in place
    except OSError:
        shutil.copy2(src, dst)


def notes(stage: Path, rebuilt: set[str], kept: list) -> list[str]:
    """Lines for the report about kept files: those failing today's check, a stale bench.json.

    Args:
        rebuilt: the file names this export rebuilt.
        kept: edgekit.exporting.choose.Candidate of each kept artifact, checked.
    """
    lines = [f"{c.fmt.file} was kept from the previous export (not asked to rebuild) and "
             f"fails today's check: {c.check.why}" for c in kept if not c.check.passed]
    bench = stage / BENCH
    if bench.is_file():
        try:
            timed = {r.get("file") for r in json.loads(bench.read_text())["results"]}
        except (ValueError, KeyError, TypeError):
            timed = set()
        stale = sorted(timed & rebuilt)
        if stale:
            lines.append(f"bench.json was kept but timed the previous {', '.join(stale)}; run "
                         "`edgekit bench` again")
    return lines
