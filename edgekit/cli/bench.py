"""`edgekit bench`: time artifacts on this machine (the hidden `time` command), or compare
result files from several machines (`compare`)."""

from __future__ import annotations

import math
from pathlib import Path

import click

from edgekit.cli.common import parse_counts
from edgekit.errors import EdgekitError


class BenchGroup(click.Group):
    """`edgekit bench ARTIFACT|RUN...` times artifacts; `edgekit bench compare A.json ...` compares.

    Only the word `compare` picks a subcommand; any other first argument is an artifact or a
    run directory, handed to the hidden timing command. So `edgekit bench run` benchmarks a
    directory called "run", and a directory called "compare" is written ./compare.
    """

    def parse_args(self, ctx, args):
        if not args or args[0] != "compare":
            args = [TIME, *args]  # --help included: the everyday form's help
        return super().parse_args(ctx, args)


class BenchTimeContext(click.Context):
    @property
    def command_path(self) -> str:  # usage and "Try ... --help" lines show what users type
        return self.parent.command_path


class BenchTime(click.Command):
    """The timing command, shown as `edgekit bench`: users never type its name."""

    context_class = BenchTimeContext


TIME = "time"  # the hidden command's name; users never type it


@click.group("bench", cls=BenchGroup)
def bench_group():
    """Time artifacts on this machine, or compare result files from several machines."""


@bench_group.command(TIME, cls=BenchTime, hidden=True,
                     epilog="Compare machines: edgekit bench compare A.json B.json (see "
                     "edgekit bench compare --help).")
@click.argument("artifacts", nargs=-1, required=True, metavar="ARTIFACT|RUN...",
                type=click.Path(path_type=Path))
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="Timed calls per artifact and setting  [default: 200].")
@click.option("--seconds", type=float, default=None,
              help="Time budget per artifact and setting, instead of --runs.")
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True,
              help="Untimed calls first.")
@click.option("--threads", default=None, metavar="N[,N...]",
              help="Intra-op threads, e.g. 1,2 or 1,all (default: all cores).")
@click.option("--batch", default="1", show_default=True, metavar="N[,N...]",
              help="Inputs per call, e.g. 1,8.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="JSON report (default: bench.json beside the first artifact).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the JSON report instead of the table.")
@click.option("--photos", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="End to end: time ARTIFACT on the images of DIR, photos in to labels out "
                   "(batch: the first --batch), against the model alone.")
def bench_cmd(artifacts, runs, seconds, warmup, threads, batch, out, as_json, photos):
    """Measure the latency of artifacts (.onnx, .ts) or run directories on this machine.

    A run directory stands for every artifact its export verified. Prints p50/p90/p99, mean,
    std, CV, the 95% interval of the median and throughput, per artifact, thread count and
    batch size; names the fastest artifact only when its interval overlaps no other's, and
    warns when a measurement was noisy (CV > 10%).
    """
    from edgekit.benchmark import bench, expand, format_table
    from edgekit.fileio import atomic_path, json_text
    from edgekit.machine import usable_cores

    if runs is not None and seconds is not None:
        raise EdgekitError("give --runs or --seconds, not both")
    if seconds is not None and not 0 < seconds < math.inf:
        raise EdgekitError(f"--seconds {seconds:g}: expected a time budget > 0")
    thread_counts = parse_counts(threads or "all", "--threads", all_value=usable_cores())
    batches = parse_counts(batch, "--batch")
    if photos is not None:
        from edgekit.benchmark.endtoend import run_end_to_end

        return click.echo(run_end_to_end(artifacts, photos, batches[0],  # None: as predict
                                         thread_counts[0] if threads else None,
                                         seconds or 3.0, as_json))
    files, _ = expand(artifacts)  # a bad directory fails before --out is claimed
    out = out or files[0].with_name("bench.json")
    if out.is_dir():  # checked before timing, so no measurement is lost
        raise EdgekitError(f"--out {str(out)!r} is a directory; expected a .json file path")
    with atomic_path(out) as tmp:  # claimed first: an unwritable --out fails before timing
        report = bench(list(artifacts), runs=runs or 200, warmup=warmup, threads=thread_counts,
                       batch=batches, seconds=seconds)
        tmp.write_text(json_text(report), encoding="utf-8")
    if as_json:
        click.echo(json_text(report), nl=False)
    else:
        click.echo(format_table(report))
        click.echo(f"wrote {out}")
    for line in report["skipped"]:
        click.echo(f"skipped: {line}", err=True)
    for line in noise_lines(report):
        click.echo(f"warning: {line}", err=True)


@bench_group.command("compare")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--baseline", default=None, metavar="FILE|LETTER",
              help="The machine ratios divide by: one of the files, or its letter (default A, "
                   "the first).")
@click.option("--chart", type=click.Path(path_type=Path), default=Path("bench-compare.png"),
              show_default=True, help="The PNG bar chart to write.")
@click.option("--no-chart", is_flag=True, help="Print the table only.")
@click.option("--any-threads", is_flag=True,
              help="Match artifacts whatever their thread counts (each file's run with the "
                   "most threads); by default only equal counts match, 'all' matching 'all'.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def bench_compare_cmd(results, baseline, chart, no_chart, any_threads, as_json):
    """Compare bench RESULTS (JSON of `edgekit bench` or `make bench`) from several machines.

    Prints the median latency of each artifact on each machine, side by side, with ratios to
    the baseline machine, and writes a PNG bar chart. Emulated (qemu) results are labelled.
    """
    from edgekit.benchmark import compare, format_compare
    from edgekit.fileio import json_text

    report = compare(list(results), baseline=baseline, match_threads=not any_threads)
    if not no_chart and chart.is_dir():
        raise EdgekitError(f"--chart {str(chart)!r} is a directory; expected a .png file path")
    if as_json:
        click.echo(json_text(report), nl=False)
    else:
        click.echo(format_compare(report))
    if not no_chart:
        try:
            from edgekit.benchmark.chart import bar_chart
            click.echo(f"wrote {bar_chart(report, chart)}", err=as_json)
        except ImportError as e:
            if e.name != "matplotlib":
                raise
            click.echo("warning: no chart: it needs matplotlib (pip install matplotlib, or "
                       "the train extra); the table above is complete", err=True)


def noise_lines(report: dict, most: int = 3) -> list[str]:
    """The bench's noise warnings, folded into one line when there are many."""
    lines = report["warnings"]
    if len(lines) <= most:
        return lines
    noisy = sorted((r for r in report["results"] if r["noisy"]), key=lambda r: -r["cv"])
    worst = ", ".join(f"{r['label']} b{r['batch']} t{r['threads']} {r['cv']:.0%}"
                      for r in noisy[:most])
    return [f"{len(noisy)} of {len(report['results'])} results are too noisy (CV > 10%; "
            f"worst: {worst}); medians are less reliable: close other programs, or raise "
            "--runs / --seconds"]
