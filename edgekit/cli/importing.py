"""`edgekit import`: a model edgekit did not train becomes a run directory (edgekit.importer)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("import")
@click.argument("source")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The run directory to create (then: edgekit export RUN ...).")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="The model's state dict: .safetensors, or .pt/.pth (read weights_only).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Your images: a folder of class folders (labeled), or a flat folder "
                   "(unlabeled: int8 is checked by agreement with fp32).")
@click.option("--labels", default=None, metavar="FILE|a,b,c",
              help="Class names: a text file (one per line) or a comma-separated list.")
@click.option("--input-shape", default=None, metavar="CxHxW",
              help="One input without the batch, e.g. 3x224x224 (read from .onnx/.pt2).")
@click.option("--mode", type=click.Choice(["RGB", "L"]), default=None,
              help="Colour mode images are converted to (default: from the input's channels).")
@click.option("--resize", type=click.IntRange(min=0), default=0,
              help="Resize the shorter side to N, then center-crop --image-size.")
@click.option("--image-size", type=click.IntRange(min=0), default=0,
              help="The model's input size N (N x N).")
@click.option("--normalize", default="none", show_default=True,
              metavar="imagenet|none|M,M,M/S,S,S",
              help="How pixels in [0, 1] are normalized, as in your training.")
@click.option("--task", type=click.Choice(["classification", "raw"]), default=None,
              help="classification (one (B, K) output) or raw (named output arrays); "
                   "default: from the outputs.")
def import_cmd(source, out, weights, data, labels, input_shape, mode, resize, image_size,
               normalize, task):
    """Make a run directory of SOURCE, a model edgekit did not train, checked on --data.

    SOURCE is FILE.py:NAME or package.module:NAME (an nn.Module class, or a function returning
    one), torchvision:NAME or timm:NAME (with --weights), a .pt2 (torch.export.save), or an
    .onnx file (no PyTorch needed). Then: edgekit export RUN --onnx --pte --int8.
    """
    import edgekit

    run = edgekit.import_model(source, out, weights=weights, data=data, labels=labels,
                               input_shape=input_shape, mode=mode, resize=resize,
                               image_size=image_size, normalize=normalize, task=task)
    click.echo(run.summary_line())
    click.echo(f"next: edgekit export {run.path} --onnx --int8"
               + (" --pte" if run.source_kind != "onnx" else ""))
