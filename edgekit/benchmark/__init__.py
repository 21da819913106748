"""Latency of artifacts on this machine, and the same artifacts compared across machines.

    stats.py       measure() and time_interleaved() - the one timing harness -, latency_stats(),
                   intervals, verdict() and pick(): the one rule for "faster"
    sweep.py       bench(): artifacts x threads x batch, interleaved, with the machine's facts
    efficiency.py  GMAC/s and % of the machine's GEMM peak;  peak.py  that peak, measured once
    compare.py     compare(): several machines' result files side by side, ratios to a baseline
    chart.py       bar_chart(): the comparison as a PNG (needs matplotlib)
    loadtest.py    a bounded load test of `edgekit serve`;  abuse.py  load, then bad requests

Nothing here imports torch: `edgekit bench` on .onnx files runs with the base install.
"""

from edgekit.benchmark.compare import compare, format_compare, load_result
from edgekit.benchmark.stats import latency_stats, measure, median_interval, verdict
from edgekit.benchmark.sweep import bench, expand, format_table
from edgekit.machine import machine_info

__all__ = ["bench", "compare", "expand", "format_compare", "format_table", "latency_stats",
           "load_result", "machine_info", "measure", "median_interval", "verdict"]
