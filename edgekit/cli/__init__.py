"""The `edgekit` command: each subcommand parses its arguments and calls one library function.

Heavy imports (torch, onnx) happen inside the commands that need them, so `predict` and `bench`
on .onnx files run on a machine without torch.

This package is the click group `main` and the error handling every command shares; each
command is one module (flags, help and output formatting): recipes, train, import, export, predict,
verify, serve, bench (time and compare), tune, doctor, summary; common.py holds what several
share (the default top-k, count lists).
"""

from __future__ import annotations

import sys

import click

from edgekit import __version__
from edgekit.cli import (
    bench,
    doctor,
    export,
    importing,
    predict,
    recipes,
    serve,
    summary,
    train,
    tune,
    verify,
)
from edgekit.errors import EdgekitError, Interrupted

# Modules that only the `train` extra installs: the base install is the Pi runtime.
TRAIN_EXTRA = {"torch", "torchvision", "onnx", "onnxscript", "sklearn", "tqdm", "matplotlib",
               "safetensors"}


class Group(click.Group):
    """Turns user-facing failures into one line on stderr and exit status 1.

    EdgekitError (bad input, failed check), OSError (a path that can't be written or read) and
    a missing training extra; anything else is a bug and keeps its traceback.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Interrupted as e:  # a checkpoint was saved: the conventional 128 + signal
            click.echo(f"error: {' '.join(str(e).split())}", err=True)
            sys.exit(e.exit_code)
        except EdgekitError as e:
            fail(str(e))
        except OSError as e:
            fail(f"{e.strerror or e}: {e.filename!r}" if e.filename else str(e))
        except ImportError as e:
            if (e.name or "").partition(".")[0] not in TRAIN_EXTRA:
                raise
            fail(f"`edgekit {ctx.invoked_subcommand}` needs the training extra "
                 f"(pip install 'edgekit[train]'): no module named {e.name!r}")


def fail(message: str):
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
def main():
    """Train a model from a recipe, export it to ONNX/TorchScript (int8), run and bench it."""
    import warnings

    from edgekit.errors import EdgekitWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, EdgekitWarning):  # input that runs but may mislead: one line
            click.echo(f"warning: {' '.join(str(message).split())}", err=True)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    # The runtime's quick NaN/inf test sums +inf and -inf to NaN, and numpy says so; the
    # EdgekitWarning that follows is the one line the user needs.
    warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning,
                            r"edgekit\.runtime")


for command in (recipes.recipes_cmd, train.train_cmd, importing.import_cmd, export.export_cmd,
                predict.predict_cmd, verify.verify_cmd, serve.serve_cmd, bench.bench_group,
                tune.tune_cmd, doctor.doctor_cmd, summary.summary_cmd):
    main.add_command(command)
