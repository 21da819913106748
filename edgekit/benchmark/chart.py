"""The PNG of `edgekit bench compare`: median latency per artifact, one bar per machine.

Needs matplotlib (the `train` extra); the comparison table itself does not.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.fileio import atomic_path


def bar_chart(report: dict, out: str | Path) -> Path:
    """Grouped horizontal bars: one group per artifact row of `report`, one bar per machine.

    Emulated machines are hatched and say EMULATED in the legend. A log scale is used when the
    slowest bar is more than 20x the fastest (emulated ARM against native x86 usually is).

    Args:
        report: what `edgekit.benchmark.compare.compare()` returns.
        out: the PNG to write (atomically).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    machines, rows = report["machines"], report["rows"]
    n = len(machines)
    height = 0.8 / n
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.22 * n * len(rows) + 0.35 * len(rows)))
    values = [v for r in rows for v in r["ms"].values() if v]
    for i, m in enumerate(machines):
        ys = [len(rows) - 1 - j + (n / 2 - i - 0.5) * height for j in range(len(rows))]
        ms = [r["ms"][m["letter"]] or 0.0 for r in rows]
        bars = ax.barh(ys, ms, height=height * 0.92, label=legend_label(m, report["baseline"]),
                       hatch="//" if m["emulated"] else None,
                       edgecolor="black" if m["emulated"] else None, linewidth=0.4)
        for bar, v in zip(bars, ms, strict=True):
            if v:
                ax.annotate(f"{v:.3g}", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                            xytext=(3, 0), textcoords="offset points", va="center",
                            fontsize=7)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([_row_label(r) for r in reversed(rows)], fontsize=8)
    if values and max(values) / min(values) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("median latency per call, ms (lower is faster)")
    ax.set_title("edgekit bench compare: median latency per call")
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.12)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.1), frameon=False)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def legend_label(machine: dict, baseline: str) -> str:
    """How the chart names a machine: letter, facts, baseline, and EMULATED where it is."""
    label = f"{machine['letter']}: {machine['name']}"
    if machine["letter"] == baseline:
        label += " (baseline)"
    if machine["emulated"]:
        label += "\n(qemu-user times: they show the ARM code runs, not how fast ARM is)"
    return label


def _row_label(r: dict) -> str:
    model = f"{r['model']}/" if r["model"] else ""
    return f"{model}{r['file']}\nbatch {r['batch']}, threads {r['threads']}"
