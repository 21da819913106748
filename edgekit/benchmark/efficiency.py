"""How much of this machine's own limit an artifact reaches: GMAC/s and % of the GEMM peak.

    macs = artifact_macs(path)              # MACs per input, from the export's manifest.json
    row.update(efficiency(macs, row["precision"], row["batch"], row["p50_ms"], peak))

An int8 artifact is measured against the int8 GEMM peak, an fp32 one against the fp32 peak
(edgekit.benchmark.peak); fp16 and unknown precisions have no matching peak. A share of the peak
says how much headroom is left on this CPU, which a multiple of torch eager cannot: eager may
itself be near the limit or far from it.
"""

from __future__ import annotations

from pathlib import Path

from edgekit import manifest as mf
from edgekit.errors import EdgekitError
from edgekit.formats import importable

PEAK_FOR = {"int8": "int8", "fp32": "fp32"}  # artifact precision -> the peak it runs against


def artifact_macs(path: Path) -> int | None:
    """Multiply-accumulates per input of an artifact, None where nobody counted them.

    From the `macs` of the manifest.json beside it (written at export); for an .onnx file
    without one, counted from its graph when the `onnx` package is installed.
    """
    path = Path(path)
    try:
        manifest = mf.beside(path, verify=False)
    except EdgekitError:
        manifest = None
    if manifest is not None and "macs" in manifest:  # counted at export (None: could not)
        per_input = (manifest["macs"] or {}).get("per_input")
        return per_input if isinstance(per_input, int) and per_input > 0 else None
    if path.suffix == ".onnx" and importable("onnx"):
        from edgekit.macs import try_count

        return try_count(path)["per_input"] or None
    return None


def efficiency(macs: int | None, precision: str, batch: int, latency_ms: float,
               peak: dict | None) -> dict:
    """The efficiency columns of one bench result.

    Args:
        macs: MACs per input (None: unknown).
        precision: the artifact's ("int8", "fp32", ...), which picks the peak.
        batch: inputs per call.
        latency_ms: one call's latency (the bench uses its median).
        peak: edgekit.benchmark.peak.gemm_peak() at the result's thread count, or None.

    Returns:
        {"macs_per_input", "gmacs": MACs * batch / latency (G per second), "peak_gmacs",
         "peak_op", "pct_of_peak"}; None where unknown.
    """
    gmacs = macs * batch / (latency_ms * 1e6) if macs and latency_ms > 0 else None
    kernel = (peak or {}).get(PEAK_FOR.get(precision, ""))
    top = kernel["gmacs"] if kernel else None
    return {"macs_per_input": macs,
            "gmacs": gmacs,
            "peak_gmacs": top, "peak_op": kernel["op"] if kernel else None,
            "pct_of_peak": 100 * gmacs / top if gmacs is not None and top else None}


def peaks(threads: list[int], needed: bool) -> dict[int, dict | None]:
    """The GEMM peak at each thread count (cached per machine), or None for each when the
    results have no MAC count to divide by, or under qemu emulation, where a share of an
    emulated peak says nothing about any real CPU (and a 1024^3 GEMM takes many seconds)."""
    from edgekit.machine import machine_info

    if not needed or machine_info()["emulated"]:
        return {t: None for t in threads}
    from edgekit.benchmark.peak import gemm_peak

    return {t: gemm_peak(t) for t in threads}


def efficiency_cells(result: dict) -> tuple[str, str]:
    """The table's "GMAC/s" and "% peak" cells of one result ("-" where unknown)."""
    gmacs, pct = result.get("gmacs"), result.get("pct_of_peak")
    return (f"{gmacs:.4g}" if gmacs is not None else "-",
            f"{pct:.0f}%" if pct is not None else "-")


def peak_lines(report: dict) -> list[str]:
    """One line per thread count: the GEMM peaks the "% peak" column divides by."""
    lines = []
    for threads, p in (report.get("gemm_peak") or {}).items():
        lines.append(f"GEMM peak here, {threads} thread{'s' if threads != '1' else ''}: int8 "
                     f"{p['int8']['gmacs']:.4g} GMAC/s ({p['int8']['op']}), fp32 "
                     f"{p['fp32']['gmacs']:.4g} GMAC/s ({p['fp32']['op']}), "
                     f"{p['int8']['shape'][0]}^3"
                     + (", cached" if p.get("cached") else "") + "; % peak = GMAC/s at p50 / "
                     "the peak of the artifact's precision")
    return lines
