"""`edgekit export`: a flag per format family and precision from the catalog, the export
report."""

from __future__ import annotations

from pathlib import Path

import click


def format_flags(command):
    """`--FAMILY` for each format family and `--PRECISION` for each other precision, from the
    format catalog (edgekit.formats): a new format brings its own flag."""
    from edgekit import formats

    for precision in reversed(formats.precisions()):
        made = " and/or ".join(f.help for f in formats.formats() if f.precision == precision)
        command = click.option(f"--{precision}", is_flag=True,
                               help=f"Also write {precision} of each format asked for: {made}.")(
            command)
    for family in reversed(formats.families()):
        fp32 = next(f for f in formats.formats() if f.format == family)
        command = click.option(f"--{family}", is_flag=True, help=fp32.help)(command)
    return command


@click.command("export")
@click.argument("run", type=click.Path(path_type=Path), required=False)
@format_flags
@click.option("--target", default="local", show_default=True, metavar="TARGET",
              help="Where the model will run: local (this CPU: int8 layouts timed, the fastest "
                   "kept), or a documented preset: x86, pi4, pi5, arm64.")
@click.option("--int8-method", default=None, metavar="METHOD",
              help="auto, static (calibrated) or dynamic int8; default: the recipe's "
                   "export.int8_method, auto (static for conv nets, dynamic for Linear/RNN).")
@click.option("--int8-exclude", "exclude", multiple=True, metavar="NAME",
              help="Keep layer NAME (a module name, e.g. classifier.7 or layer4) in fp32 in "
                   "the int8 artifacts; repeatable or comma-separated.")
@click.option("--allow-degraded", is_flag=True,
              help="Keep an artifact that fails its check, recorded as failed in the report "
                   "and manifest, instead of failing the export.")
@click.option("--max-int8-drop", type=click.FloatRange(min=0), default=None,
              help="Accuracy points int8 may lose (default: the recipe's export.max_int8_drop).")
@click.option("--tune-seconds", type=click.FloatRange(min=0), default=None,
              help="Timing budget per int8 candidate with --target local (default: the "
                   "recipe's export.tune_seconds; 0 keeps the first layout untimed).")
@click.option("--no-int8-fallback", "no_int8_fallback", is_flag=True,
              help="When int8 ONNX fails its accuracy check, fail (or --allow-degraded) "
                   "instead of searching calibration methods and keeping layers fp32.")
@click.option("--keep-candidates", is_flag=True,
              help="Also ship every int8 candidate that passed its check (candidates/) and "
                   "the host's outputs of each file (references.npz), for `edgekit tune` on "
                   "the device.")
def export_cmd(run, target, int8_method, exclude, allow_degraded, max_int8_drop, tune_seconds,
               no_int8_fallback, keep_candidates, **flags):
    """Export RUN's model and verify every artifact against PyTorch.

    Only the formats asked for are rebuilt; other files in RUN/export are kept. Without RUN,
    the most recently finished run under runs/ is exported.
    """
    import edgekit

    layers = tuple(n.strip() for item in exclude for n in item.split(",") if n.strip())
    if run is None:
        from edgekit.rundir import latest_run

        run = latest_run()
        click.echo(f"exporting {run} (the latest finished run under runs/)", err=True)
    exp = edgekit.export(run, target=target, int8_method=int8_method, exclude=layers,
                         allow_degraded=allow_degraded, max_int8_drop=max_int8_drop,
                         tune_seconds=tune_seconds, int8_fallback=not no_int8_fallback,
                         keep_candidates=keep_candidates, **flags)
    click.echo(exp.markdown().rstrip())
    click.echo(f"artifacts: {exp.path}")
