"""`edgekit train`: train a recipe (or resume a run) and print its result."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.errors import EdgekitError
from edgekit.rundir import RunDir


@click.command("train")
@click.argument("recipe", required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set train.epochs=5 (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run directory to create (default runs/RECIPE-TIMESTAMP).")
@click.option("--resume", type=click.Path(path_type=Path), default=None, metavar="RUN",
              help="Continue the unfinished run RUN from its last checkpoint.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def train_cmd(recipe, overrides, out, resume, no_progress):
    """Train RECIPE (a bundled name or a .yaml path) and write a run directory.

    SIGINT/SIGTERM finish the current step, save a checkpoint and exit with 130/143;
    `--resume RUN` then continues to the result an unbroken run would have reached.
    Under `torchrun --nproc_per_node=N -m edgekit train ...` the processes train in parallel.
    """
    import json

    from edgekit import train as training
    from edgekit.recipe import load_recipe
    from edgekit.tasks import get_task

    if resume is not None:
        if recipe or overrides or out:
            raise EdgekitError("--resume RUN continues RUN with its own recipe: give no RECIPE, "
                               "--set or --out")
        run = training.resume(resume, progress=not no_progress)
    elif recipe is None:
        raise EdgekitError("give a RECIPE to train (see `edgekit recipes`) or --resume RUN")
    else:
        run = training.train(load_recipe(recipe, overrides), out, progress=not no_progress)
    if run is None:  # a torchrun rank other than 0: rank 0 reports
        return
    m = json.loads(RunDir(run).metrics.read_text())
    task = get_task(m["task"])
    click.echo(f"run: {run}")
    click.echo(f"test {task.metric} {task.format(m['test_' + task.metric])} on "
               f"{m['test_samples']} held-out samples ({len(m['history'])} epochs, "
               f"{m['train_seconds']:.1f} s on {m['device']}"
               + (f" x {m['processes']} processes" if m["processes"] > 1 else "") + ")")
    if "qat" in m:  # the metric above is the fake-quantized model's
        base = m["qat"].get(f"base_test_{task.metric}")
        click.echo(f"quantization-aware: int8 simulated; the run it fine-tuned, "
                   f"{m['qat']['base']}, had {task.format(base) if base is not None else '?'} "
                   f"in fp32; next: edgekit export {run} --onnx --pte --int8")
    if "sample" in m:
        click.echo(f"held-out image: {run / m['sample']['file']} (label {m['sample']['label']})")
