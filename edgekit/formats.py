"""The format catalog: every artifact kind edgekit writes and runs, as data (no torch, no onnx).

One entry says everything the rest of edgekit needs to know about a format:

    file        the artifact's name in an export folder ("model.int8.onnx")
    format      the family ("onnx", "torchscript"); its CLI flag is `--FORMAT`
    title       the family as people write it ("ONNX", "TorchScript")
    precision   "fp32", or the precision flag that asks for it ("int8" -> `--int8`)
    exporter    module with `write(ctx, path, manifest) -> [(file, how), ...]` (edgekit.exporting)
    backend     "module:Class" of the Runner that loads its suffix (edgekit.runtime)
    needs       catalog names written first (int8 ONNX is made from model.onnx)
    requires    modules the backend imports to run it ("torch" for TorchScript)
    extra       the pip extra that installs them ("" when the base install runs it)
    best_effort a model the format cannot take is reported, not an export failure
    deprecated  why the path is deprecated upstream and what replaces it ("" if it is not)
    search      module whose `variants`/`table` make the int8 accuracy search's Variants
                (edgekit.exporting.int8.mixed); "" for a format without a search
    chart       the file of that search's per-layer sensitivity chart

`edgekit export`'s flags, the export order, `edgekit.runtime.load` by suffix, the manifest's
list of model files and `edgekit bench` all read this table; the module strings keep the
runtime from importing an exporter's (or another backend's) dependencies. A new format is one
exporter module, one backend module and one `register()` call here (or from a plugin).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import PurePath

from edgekit.errors import EdgekitError
from edgekit.registry import Registry

# Precision flags and what they do to a model, for help texts and errors.
PRECISIONS = {"int8": "quantizes", "fp16": "converts"}


@dataclass(frozen=True)
class Format:
    """One artifact kind (see the module docstring for the fields)."""

    name: str
    file: str
    format: str
    title: str
    precision: str
    exporter: str
    backend: str
    needs: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    extra: str = ""
    best_effort: bool = False
    deprecated: str = ""
    help: str = ""  # what the CLI flag writes (fp32 entries) or adds (other precisions)
    search: str = ""
    chart: str = ""

    @property
    def suffix(self) -> str:
        return PurePath(self.file).suffix

    def missing(self) -> list[str]:
        """The modules this format's backend needs that this machine lacks."""
        return [m for m in self.requires if not importable(m)]

    def install_hint(self) -> str:
        """One line: what this format needs, for a machine that lacks it."""
        return (f"{self.suffix} needs {' and '.join(self.requires)} on this machine: pip "
                f"install 'edgekit[{self.extra}]'; the .onnx artifacts need neither")


def importable(module: str) -> bool:
    """Whether `module` can be found; a finder that refuses it (ImportError) counts as absent."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


CATALOG: Registry = Registry("export format")


def register(fmt: Format) -> Format:
    """Add `fmt` to the catalog, after the formats it needs.

    Raises:
        ValueError: a duplicate name, a need that is not registered yet, or a suffix that
            another backend already runs (one suffix, one backend).
    """
    for need in fmt.needs:
        if need not in CATALOG:
            raise ValueError(f"format {fmt.name!r} needs {need!r}, which is not registered")
    clash = [f for f in formats() if f.suffix == fmt.suffix and f.backend != fmt.backend]
    if clash:
        raise ValueError(f"{fmt.suffix} files already run on {clash[0].backend}")
    return CATALOG.register(fmt.name)(fmt)


def unregister(name: str) -> None:
    """Remove a format (plugins and tests that add one for a while)."""
    CATALOG._entries.pop(name, None)


def formats() -> list[Format]:
    """Every format, in the order they are written and listed: each after those it needs."""
    return list(CATALOG._entries.values())


def get(name: str) -> Format:
    """The format called `name`. Raises EdgekitError naming the valid ones."""
    return CATALOG.get(name)


def by_file(name: str) -> Format | None:
    """The format whose artifact file is called `name` ("model.int8.onnx"), if any."""
    return next((f for f in formats() if f.file == name), None)


def backends() -> dict[str, Format]:
    """Suffix -> the first format of that suffix (its backend runs every file of the suffix)."""
    out: dict[str, Format] = {}
    for f in formats():
        out.setdefault(f.suffix, f)
    return out


def families() -> list[str]:
    """The format families, each a CLI flag (`--onnx`), in catalog order."""
    return list(dict.fromkeys(f.format for f in formats()))


def precisions() -> list[str]:
    """The precisions other than fp32, each a CLI flag (`--int8`), in catalog order."""
    return list(dict.fromkeys(f.precision for f in formats() if f.precision != "fp32"))


def _title(family: str) -> str:
    return next(f.title for f in formats() if f.format == family)


def select(families_on: list[str], precisions_on: list[str]) -> list[str]:
    """Catalog names for the CLI's flags: each family's fp32 format, plus its other precisions.

    Raises:
        EdgekitError: a precision flag that no family asked for has (names the ones that do).
    """
    for precision in precisions_on:
        have = [fam for fam in families()
                if any(f.format == fam and f.precision == precision for f in formats())]
        if not any(fam in families_on for fam in have):
            names = " and/or ".join(_title(fam) for fam in have)
            flags = " and/or ".join(f"--{fam}" for fam in have)
            raise EdgekitError(f"--{precision} {PRECISIONS.get(precision, 'makes')} the {names} "
                               f"model: add {flags}")
    wanted = {"fp32", *precisions_on}
    return [f.name for f in formats() if f.format in families_on and f.precision in wanted]


def ordered(names: list[str]) -> list:
    """The catalog's formats for `names`, each after the formats it is made from.

    Raises:
        EdgekitError: nothing asked for, a format without the one it is made from, or one
            whose libraries this machine lacks (naming the extra that installs them).
    """
    if not names:
        raise EdgekitError("nothing to export: pass " + " and/or ".join(
            f"--{f}" for f in families()) + " (with --int8, --fp16)")
    for name in names:
        for need in get(name).needs:
            if need not in names:
                raise EdgekitError(f"export format {name!r} is made from {need!r}: add it")
        if get(name).missing():
            raise EdgekitError(f"--{get(name).format}: {get(name).install_hint()}")
    return [f for f in formats() if f.name in names]


ONNX_RUNNER = "edgekit.runtime.onnx:OnnxRunner"
TS_RUNNER = "edgekit.runtime.torchscript:TorchScriptRunner"
PTE_RUNNER = "edgekit.runtime.pte:PteRunner"
register(Format("onnx", "model.onnx", "onnx", "ONNX", "fp32", "edgekit.exporting.formats.onnx",
                ONNX_RUNNER, help="Write model.onnx (fp32)."))
register(Format("onnx-int8", "model.int8.onnx", "onnx", "ONNX", "int8",
                "edgekit.exporting.formats.onnx_int8", ONNX_RUNNER, needs=("onnx",),
                help="model.int8.onnx (onnxruntime)",
                search="edgekit.exporting.int8.mixed_onnx", chart="sensitivity.png"))
register(Format("onnx-fp16", "model.fp16.onnx", "onnx", "ONNX", "fp16",
                "edgekit.exporting.formats.onnx_fp16", ONNX_RUNNER, needs=("onnx",),
                help="model.fp16.onnx (for GPU hosts)"))
TS_DEPRECATED = ("TorchScript is deprecated upstream in favour of torch.export; its "
                 "replacement for the edge is ExecuTorch (--pte)")
register(Format("torchscript", "model.ts", "torchscript", "TorchScript", "fp32",
                "edgekit.exporting.formats.torchscript", TS_RUNNER, requires=("torch",),
                extra="train",
                deprecated=TS_DEPRECATED, help="Write model.ts (fp32, traced and frozen)."))
register(Format("torchscript-int8", "model.int8.ts", "torchscript", "TorchScript", "int8",
                "edgekit.exporting.formats.torchscript_int8", TS_RUNNER, requires=("torch",),
                extra="train", help="model.int8.ts (torch.ao)",
                search="edgekit.exporting.int8.mixed_torch",
                chart="sensitivity.torchscript-int8.png",
                deprecated="TorchScript and torch.ao.quantization (and the quantized dtypes it "
                           "stores, pytorch#184982) are deprecated upstream; the replacement is "
                           "torch.export -> PT2E int8 -> ExecuTorch (--pte --int8)"))
register(Format("pte", "model.pte", "pte", "ExecuTorch", "fp32",
                "edgekit.exporting.formats.pte", PTE_RUNNER,
                requires=("torch", "executorch"), extra="pte", best_effort=True,
                help="Write model.pte (ExecuTorch, lowered to XNNPACK; needs edgekit[pte])."))
register(Format("pte-int8", "model.int8.pte", "pte", "ExecuTorch", "int8",
                "edgekit.exporting.formats.pte_int8", PTE_RUNNER, requires=("torch", "executorch"),
                extra="pte", best_effort=True, help="model.int8.pte (PT2E, XNNPACK)",
                search="edgekit.exporting.int8.mixed_torch", chart="sensitivity.pte-int8.png"))
