"""`edgekit import`: a model edgekit did not train becomes a run directory like a recipe's.

    SOURCE                       what is kept in RUN                  how export rebuilds it
    my_net.py:Net + --weights    source/my_net.py, model.safetensors  the class, then the weights
    package.module:NAME          model.safetensors                    the installed module
    torchvision:NAME, timm:NAME  model.safetensors                    the hub's architecture
    model.pt2                    source/model.pt2, model.safetensors  torch.export.load
    model.onnx                   source/model.onnx                    (no PyTorch at all)

The user's data (`--data`: a folder of class folders, or a flat folder of unlabeled images,
or the same of .npy arrays) become the run's splits: half calibrates int8, half checks it;
without data, noise checks the fp32 artifacts and int8 is refused. With labels the int8 gate is in
accuracy points as for a recipe; without, in agreement with the fp32 model (top-1 for
classifiers, relative error for raw outputs). Outputs that are not one (B, K) tensor of class
scores are raw: named arrays packed into one row (edgekit.tasks.Raw). Everything is written in
a temporary folder beside RUN and renamed into place, so a failed import leaves nothing.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit import __version__
from edgekit.errors import EdgekitError, one_line
from edgekit.fileio import write_json, write_text
from edgekit.rundir import METRICS, RECIPE, SOURCE, WEIGHTS

IMPORT_TEST_FRACTION = 0.5  # of the user's data: the other half calibrates int8
RAW_INT8_BUDGET = 5.0  # percent relative error int8 may add to raw outputs (~26 dB SQNR)


@dataclass
class Inputs:
    """How the model's input is made from the user's files (the CLI's flags)."""

    input_shape: tuple[int, ...] | None = None  # one input without the batch dimension
    mode: str | None = None  # "RGB" or "L"
    resize: int = 0
    image_size: int = 0
    normalize: str = "none"


def import_model(source, out: str | Path, *, weights: str | Path | None = None,
                 data: str | Path | None = None, labels: str | list | None = None,
                 inputs: Inputs | None = None, task: str | None = None) -> Path:
    """Write a run directory for a model edgekit did not train.

    Args:
        source: "file.py:NAME", "package.module:NAME", "torchvision:NAME", "timm:NAME", a
            .pt2 or .onnx path, or an nn.Module (its class importable, else saved as .pt2).
        out: the run directory to create (must not exist).
        weights: a state dict (.safetensors, or .pt/.pth read with weights_only=True).
        data: a folder of class folders, or of unlabeled images.
        labels: class names: a list, "a,b,c", or a text file with one per line.
        inputs: the input's shape and image preprocessing.
        task: "classification" or "raw"; default: classification for one (B, K) output.

    Returns:
        The run directory.

    Raises:
        EdgekitError: a bad source, weights, data, labels or input description (one line).
    """
    out = Path(out)
    if out.exists():
        raise EdgekitError(f"{str(out)!r} already exists; choose another --out")
    inputs = inputs or Inputs()
    if task not in (None, "classification", "raw"):
        raise EdgekitError(f"--task {task!r}; expected classification or raw")
    kind, spec = source_kind(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model = _stage_source(kind, spec, source, stage, weights, inputs)
        _write_run(kind, model, stage, out.name, None if data is None else Path(data), labels,
                   inputs, task)
        os.replace(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def source_kind(source) -> tuple[str, str]:
    """(kind, model name as a recipe writes it) of a source; kinds: python, hub, pt2, onnx,
    module (an nn.Module object)."""
    if not isinstance(source, (str, os.PathLike)):
        return "module", type(source).__name__
    text = str(source)
    if text.endswith(".onnx"):
        return "onnx", text
    if text.endswith(".pt2"):
        return "pt2", text
    if text.partition(":")[0] in ("torchvision", "timm"):
        return "hub", text
    if text.endswith((".ts", ".pte", ".pt", ".pth", ".safetensors")):
        raise EdgekitError(f"{text!r} is not a source edgekit imports: give the model's code "
                           "(FILE.py:NAME, package.module:NAME, torchvision:NAME) with --weights "
                           "FILE, a torch.export program (.pt2) or an ONNX file")
    if ":" not in text:
        from edgekit.models.external import entry_points

        if text not in entry_points():
            raise EdgekitError(f"source {text!r}: expected FILE.py:NAME, package.module:NAME, "
                               "torchvision:NAME, timm:NAME, a .pt2 or an .onnx file")
    return "python", text


def _stage_source(kind: str, spec: str, source, stage: Path, weights, inputs: Inputs):
    """Copy what the run needs into `stage`; the loaded model (nn.Module, or an onnx Session)."""
    (stage / SOURCE).mkdir()
    if kind == "onnx":
        if weights is not None:
            raise EdgekitError("--weights applies to a PyTorch source; an ONNX file holds its "
                               "own weights")
        from edgekit.onnxsource import copy_source

        return copy_source(Path(spec), stage / SOURCE / "model.onnx", inputs)

    from edgekit.models.external import build_external

    if kind == "module":
        model, spec = _from_object(source, stage)
    elif kind == "pt2":
        shutil.copyfile(spec, stage / SOURCE / "model.pt2")
        model = build_external(spec)
        spec = f"{SOURCE}/model.pt2"
    else:
        where = spec.rpartition(":")[0]
        model = build_external(spec, input_shape=inputs.input_shape)
        if where.endswith(".py"):  # the run keeps its own copy of the user's code
            shutil.copyfile(where, stage / SOURCE / Path(where).name)
            spec = f"{SOURCE}/{Path(where).name}:{spec.rpartition(':')[2]}"
    if weights is not None:
        load_weights(model, weights)
    model.eval()  # (a .pt2's wrapper keeps the mode the program was exported in)
    _save_state(model, stage / WEIGHTS)
    model.edgekit_name = spec  # recorded in recipe.yaml as model.name
    return model


def _from_object(model, stage: Path):
    """An nn.Module object: named by its class when that imports again, else kept as .pt2."""
    import importlib

    import torch

    if not isinstance(model, torch.nn.Module):
        raise EdgekitError(f"source: expected an nn.Module or a path/name string, got "
                           f"{type(model).__name__}")
    cls = type(model)
    try:
        same = getattr(importlib.import_module(cls.__module__), cls.__qualname__) is cls
    except Exception:
        same = False
    if same and cls.__module__ != "__main__" and "<locals>" not in cls.__qualname__:
        try:  # rebuilt with no arguments, as export will
            type(model)()
            return model, f"{cls.__module__}:{cls.__qualname__}"
        except TypeError:
            pass
    raise EdgekitError(f"source: {cls.__qualname__} cannot be rebuilt by name (defined in "
                       f"{cls.__module__}, or it needs arguments); save it with "
                       "torch.export.save(torch.export.export(model, (x,)), 'model.pt2') and "
                       "import the .pt2, or put the class in a file: FILE.py:NAME")


def load_weights(model, path) -> None:
    """Load a state dict into `model`, every tensor matching by name and shape.

    Raises:
        EdgekitError: a missing or unreadable file, a pickled whole model, or keys that are
            missing, unexpected or of another shape (the first few named, with counts).
    """
    from edgekit.models.weights import read_state_dict

    try:
        state = read_state_dict(path)
    except EdgekitError as e:
        text = str(e).replace("model.pretrained: ", "--weights ")
        if "not a state dict" in text or "weights_only" in text.lower() or "Unsupported global" \
                in text:
            text = (f"--weights {str(path)!r} is not a state dict (a whole pickled model is "
                    "never unpickled); save one with torch.save(model.state_dict(), 'w.pt') or "
                    "safetensors.torch.save_file(model.state_dict(), 'w.safetensors')")
        raise EdgekitError(text) from None
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = [f"{len(v)} {what} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})"
                for what, v in (("missing", missing), ("unexpected", unexpected),
                                ("of another shape, file vs model", wrong)) if v]
    if problems:
        raise EdgekitError(f"--weights {str(path)!r} does not fit {type(model).__name__}: "
                           + "; ".join(problems) + " key(s)")
    model.load_state_dict(state)


def _save_state(model, path: Path) -> None:
    from safetensors.torch import save

    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    path.write_bytes(save(state, metadata={"format": "pt", "edgekit": __version__}))


def data_config(data: Path | None, inputs: Inputs, shape: tuple | None) -> dict:
    """The recipe's data section: the user's images or .npy arrays, or noise without data."""
    from edgekit.data.arrays import array_files
    from edgekit.data.folder import class_folders, image_files

    if data is not None and not data.is_dir():
        raise EdgekitError(f"--data {str(data)!r} is not a folder; expected a folder of class "
                           "folders (DIR/cat/*.jpg), or of unlabeled images or .npy arrays")
    imaging = inputs.mode or inputs.image_size or inputs.resize or (
        shape is not None and len(shape) == 3 and shape[0] in (1, 3))
    if data is None:  # fp32 parity on noise only; export refuses int8
        base = {"name": "noise", "test_fraction": IMPORT_TEST_FRACTION}
        if imaging:
            return {**base, **_image_section(inputs, shape)}
        if shape is None:
            raise EdgekitError("without --data, give the input's shape: --input-shape "
                               "(e.g. 1024 or 3x224x224) or --image-size")
        return {**base, "shape": "x".join(map(str, shape))}
    files, _, _ = array_files(data)
    if files and not image_files(data) and not imaging:
        return {"name": "arrayfolder", "root": str(data.resolve()),
                "test_fraction": IMPORT_TEST_FRACTION}
    labeled = bool(class_folders(data))
    if not labeled and not image_files(data):
        raise EdgekitError(f"--data {str(data)!r} holds no images, .npy files or class folders")
    return {"name": "imagefolder" if labeled else "imagefiles", "root": str(data.resolve()),
            "download": "never", "test_fraction": IMPORT_TEST_FRACTION,
            **_image_section(inputs, shape)}


def _image_section(inputs: Inputs, shape: tuple | None) -> dict:
    channels, size = None, (inputs.image_size, inputs.image_size)
    if shape is not None:
        if len(shape) != 3 or shape[0] not in (1, 3):
            raise EdgekitError(f"input shape {'x'.join(map(str, shape))}: image data need "
                               "CxHxW with C 1 or 3 (e.g. --input-shape 3x224x224)")
        channels, size = shape[0], (shape[1], shape[2])
        if inputs.image_size and inputs.image_size != shape[1]:
            raise EdgekitError(f"--image-size {inputs.image_size} differs from the model's input "
                               f"{'x'.join(map(str, shape))}")
    if not size[0]:
        raise EdgekitError("give --image-size N (or --input-shape CxHxW): the model's input "
                           "size is not in the source")
    mode = inputs.mode or ("L" if channels == 1 else "RGB")
    if mode not in ("RGB", "L"):
        raise EdgekitError(f"--mode {mode!r}; expected RGB or L")
    if channels is not None and (mode == "L") != (channels == 1):
        raise EdgekitError(f"--mode {mode} gives {1 if mode == 'L' else 3} channel(s), but the "
                           f"model takes {channels}")
    c = 1 if mode == "L" else 3
    section = {"image_size": size[0], "resize": inputs.resize, "channels": c,
               "normalize": inputs.normalize}
    if size[0] != size[1]:  # H != W: the data's own shape says it
        section["shape"] = f"{c}x{size[0]}x{size[1]}"
    return section


def _write_run(kind, model, stage: Path, name: str, data: Path, labels, inputs: Inputs,
               task_name) -> None:
    from edgekit.data import build_dataset
    from edgekit.recipe import from_dict
    from edgekit.tasks import get_task

    shape = inputs.input_shape or getattr(model, "edgekit_input_shape", None)
    section = data_config(data, inputs, shape)
    spec = model.edgekit_name
    raw = {"name": _recipe_name(name), "description": f"imported from {spec}",
           "model": {"name": spec}, "data": section}
    recipe = from_dict(raw)
    splits = build_dataset(recipe.data)
    labeled = section["name"] in ("imagefolder", "arrayfolder") and splits.labels != ["input"]
    x = splits.test.x[:]
    outputs = forward(kind, model, x[:2], splits.input_shape)
    names = _output_names(outputs)
    task_name = task_name or ("classification" if len(names) == 1
                              and outputs[names[0]].ndim == 2 else "raw")
    if task_name == "classification" and (len(names) != 1 or outputs[names[0]].ndim != 2):
        raise EdgekitError("--task classification needs one output of shape (batch, classes); "
                           f"the model gives {_shapes_text(outputs)}")
    if task_name == "raw":
        if labeled:
            raise EdgekitError(f"--data {str(data)!r} has class folders, but the model's "
                               f"outputs ({_shapes_text(outputs)}) are not class scores: give "
                               "a flat folder of images")
        spec_out = [{"name": n, "shape": list(outputs[n].shape[1:])} for n in names]
        labels_out = names
    else:
        spec_out = None
        labels_out = _labels(labels, splits.labels if labeled else None,
                             outputs[names[0]].shape[1])
    task = get_task(task_name)
    if kind == "onnx" and task_name == "raw":  # the copy gets one (B, D) output
        from edgekit.onnxsource import pack_outputs

        pack_outputs(model.path)
    reference = np.concatenate([_packed(forward(kind, model, x[i:i + 64], None), names)
                                for i in range(0, len(x), 64)])
    targets = splits.test.y if labeled and task_name == "classification" \
        else task.pseudo_targets(reference)
    export = {"max_int8_drop": RAW_INT8_BUDGET} if task_name == "raw" else {}
    recipe = from_dict({**raw, "export": export})
    write_text(stage / RECIPE, recipe.to_yaml())
    metrics = {
        "recipe": recipe.name, "model": spec, "task": task_name,
        "dataset": str(data) if data is not None else "noise (no --data: fp32 checks only)",
        "metric": task.metric, f"test_{task.metric}": task.score(reference, targets),
        "labeled": labeled, "epoch": 0, "stopped_early": False,
        "test_samples": len(splits.test), "train_samples": len(splits.train),
        "train_seconds": 0.0, "device": "cpu", "processes": 1, "amp": False,
        "input_shape": list(splits.input_shape), "input_dtype": "float32",
        "labels": labels_out, "preprocess": splits.preprocess,
        "data_fingerprint": splits.fingerprint(),
        "source": {"kind": kind, "spec": spec},
        "versions": {"edgekit": __version__, "python": platform.python_version()},
        "history": [],
    }
    if spec_out is not None:
        metrics["outputs"] = spec_out
    if kind != "onnx":
        metrics["parameters"] = sum(p.numel() for p in model.parameters())
    if labeled and len(splits.test) and splits.test.image(0) is not None:
        metrics["sample"] = {"file": "sample.png", "label": labels_out[int(splits.test.y[0])]}
        splits.test.image(0).save(stage / "sample.png")
    write_json(stage / METRICS, metrics)


def forward(kind: str, model, x: np.ndarray, shape) -> dict[str, np.ndarray]:
    """The model's outputs on a batch, by name (a tensor, a tuple/list or a dict of tensors).

    Raises:
        EdgekitError: the model rejects an input of this shape (its own message, excerpted).
    """
    try:
        if kind == "onnx":
            return model.run(x)
        import torch

        with torch.no_grad():  # (never torch.set_grad_enabled: it is process-wide)
            got = model(torch.from_numpy(np.ascontiguousarray(x)))
    except EdgekitError:
        raise
    except Exception as e:
        shown = "x".join(map(str, shape)) if shape else str(tuple(x.shape[1:]))
        raise EdgekitError(f"the model rejects input of shape {shown}: {type(e).__name__}: "
                           f"{one_line(e, 200)} (check --input-shape / --image-size / "
                           "--mode)") from None
    return outputs_by_name(got)


def outputs_by_name(got) -> dict[str, np.ndarray]:
    """A model's output as {name: numpy array}: dict keys, else output0, output1, ..."""
    import torch

    if isinstance(got, torch.Tensor):
        got = {"output": got}
    elif isinstance(got, (tuple, list)):
        fields = getattr(got, "_fields", None)  # a namedtuple names its own
        got = dict(zip(fields or [f"output{i}" for i in range(len(got))], got, strict=True))
    if not isinstance(got, dict) or not got or not all(
            isinstance(v, torch.Tensor) for v in got.values()):
        raise EdgekitError("the model's output must be a tensor, or a tuple, list or dict of "
                           f"tensors; got {type(got).__name__}")
    return {str(k): v.detach().float().numpy() for k, v in got.items()}


def _packed(outputs: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """One output as it is; several side by side, each flattened per input: (B, D)."""
    if len(names) == 1 and outputs[names[0]].ndim == 2:
        return outputs[names[0]]
    return np.concatenate([outputs[n].reshape(len(outputs[n]), -1) for n in names], axis=1)


def _output_names(outputs: dict) -> list[str]:
    for name, a in outputs.items():
        if a.ndim < 2:
            raise EdgekitError(f"output {name!r} has shape {a.shape}: expected a batch "
                               "dimension first")
    return list(outputs)


def _shapes_text(outputs: dict) -> str:
    return ", ".join(f"{n} {tuple(a.shape)}" for n, a in outputs.items())


def _labels(given, folders: list[str] | None, classes: int) -> list[str]:
    """Class names: --labels, else the data's class folders, else 0..K-1; K must match."""
    if given is None:
        names = folders or [str(i) for i in range(classes)]
        what = "class folders in --data"
    elif isinstance(given, (list, tuple)):
        names, what = [str(x) for x in given], "labels"
    elif Path(given).is_file():
        names = [ln.strip() for ln in Path(given).read_text(encoding="utf-8").splitlines()
                 if ln.strip()]
        what = f"labels in {str(given)!r}"
    else:
        names, what = [x.strip() for x in str(given).split(",")], "labels in --labels"
    if len(names) != classes:
        raise EdgekitError(f"{len(names)} {what}, but the model gives {classes} outputs; "
                           "expected one label per output")
    if folders is not None and given is not None and names != folders:
        raise EdgekitError(f"--labels {names[:5]} differ from the class folders in --data "
                           f"{folders[:5]}; expected the same names in the same order")
    return names


def _recipe_name(name: str) -> str:
    import re

    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", name).lstrip("-_.") or "imported"
    return cleaned
