"""Models that live outside edgekit, named by where they are instead of by a registered name.

    path/to/my_net.py:Net      a class or function in a Python file
    my_package.nets:build      the same in an importable module
    torchvision:resnet18       a torchvision architecture (weights=None: yours come separately)
    timm:mobilenetv3_small_100 a timm architecture, where timm is installed
    model.pt2                  a program saved with torch.export.save
    NAME                       an `edgekit.models` entry point of an installed package

A recipe's `model.name` and `edgekit import` take these. The callable (a class or a function
returning an nn.Module) is called with those of the builder keywords `input_shape`,
`num_outputs` and `dropout` that its signature names, and no others: `Net()` takes none,
`Net(num_outputs=10)` gets the recipe's class count.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

from edgekit.errors import EdgekitError, one_line

KEYWORDS = ("input_shape", "num_outputs", "dropout")
ENTRY_POINTS = "edgekit.models"
HUBS = ("torchvision", "timm")


def is_external(name: str) -> bool:
    """Whether a model name is a location (file, module, hub, .pt2) rather than a registry name."""
    return ":" in name or name.endswith(".pt2") or name in entry_points()


def entry_points() -> dict:
    """Models that installed packages declare under the `edgekit.models` entry-point group."""
    from importlib.metadata import entry_points as eps

    return {ep.name: ep for ep in eps(group=ENTRY_POINTS)}


def build_external(name: str, *, input_shape=None, num_outputs: int | None = None,
                   dropout: float = 0.0):
    """Build the nn.Module that `name` locates (see the module docstring).

    Raises:
        EdgekitError: a file or module that does not import (its own error, excerpted), NAME
            not found in it, not a Module, or keywords the callable needs that edgekit lacks.
    """
    if name.endswith(".pt2"):
        return program_module(load_program(name))
    found = locate(name)
    given = {"input_shape": tuple(input_shape) if input_shape is not None else None,
             "num_outputs": num_outputs, "dropout": dropout}
    return call_builder(found, name, {k: v for k, v in given.items() if v is not None})


def locate(name: str):
    """The class or function `name` points at (not called yet)."""
    if name in entry_points() and ":" not in name:
        try:
            return entry_points()[name].load()
        except Exception as e:
            raise EdgekitError(f"model entry point {name!r} does not load: "
                               f"{type(e).__name__}: {one_line(e)}") from None
    where, _, attr = name.rpartition(":")
    if not where or not attr:
        raise EdgekitError(f"model {name!r}: expected FILE.py:NAME, package.module:NAME, "
                           f"torchvision:NAME, timm:NAME or a .pt2 file")
    if where in HUBS:
        return _hub(where, attr)
    module = _import_file(where) if where.endswith(".py") else _import_module(where)
    found = getattr(module, attr, None)
    if found is None:
        public = sorted(n for n, v in vars(module).items()
                        if not n.startswith("_") and callable(v))[:12]
        raise EdgekitError(f"model {name!r}: {where!r} has no {attr!r}; it defines: "
                           f"{', '.join(public) or 'nothing callable'}")
    return found


def call_builder(found, name: str, given: dict):
    """Call a class or function with the builder keywords its signature names."""
    import torch

    if isinstance(found, torch.nn.Module):  # an instance: a module-level model object
        return found
    if not callable(found):
        raise EdgekitError(f"model {name!r} is a {type(found).__name__}, not an nn.Module "
                           "class or a function returning one")
    try:
        params = inspect.signature(found).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs = {k: v for k, v in given.items() if k in params}
    missing = [p.name for p in params.values() if p.default is p.empty
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in kwargs]
    if missing:
        raise EdgekitError(f"model {name!r} needs argument(s) {', '.join(missing)} that edgekit "
                           f"cannot give (it passes {', '.join(KEYWORDS)} when named); wrap it "
                           "in a function that takes none")
    try:
        model = found(**kwargs)
    except EdgekitError:
        raise
    except Exception as e:
        raise EdgekitError(f"model {name!r} failed to build: {type(e).__name__}: "
                           f"{one_line(e)}") from None
    if not isinstance(model, torch.nn.Module):
        raise EdgekitError(f"model {name!r} returned a {type(model).__name__}, not an "
                           "nn.Module")
    return model


def load_program(path: str | Path):
    """A torch.export program saved with torch.export.save (.pt2).

    Raises:
        EdgekitError: a missing file, or one this torch cannot read (a newer torch's, named).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"{str(path)!r} does not exist; expected a .pt2 file saved with "
                           "torch.export.save")
    try:
        return torch.export.load(str(path))
    except Exception as e:
        saved = _saved_by(path)
        hint = (f" (saved by torch {saved}, this is torch {torch.__version__}: load it with "
                f"the same or a newer torch)" if saved else "")
        raise EdgekitError(f"{str(path)!r} is not a torch.export program this torch can read"
                           f"{hint}: {type(e).__name__}: {one_line(e, 200)}") from None


def program_module(program):
    """An ExportedProgram as an nn.Module the exporters take. Its graph fixed train/eval mode
    when it was exported (its module refuses `.eval()`), so the wrapper's mode stays its own."""
    import torch

    class Program(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.program = program.module()
            self.edgekit_input_shape = program_input_shape(program)

        def train(self, mode: bool = True):
            self.training = mode
            return self

        def forward(self, x):
            return self.program(x)

    return Program()


def program_input_shape(program) -> tuple[int, ...] | None:
    """One input's shape without the batch, as the program was exported; None where a
    dimension after the batch is dynamic or the program takes several inputs."""
    users = set(program.graph_signature.user_inputs)
    vals = [n.meta.get("val") for n in program.graph.nodes
            if n.op == "placeholder" and n.name in users]
    if len(vals) != 1 or vals[0] is None:
        return None
    dims = tuple(vals[0].shape[1:])
    return tuple(int(d) for d in dims) if all(isinstance(d, int) for d in dims) else None


def _saved_by(path: Path) -> str:
    """The torch version a .pt2 archive records, or ''."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            for n in z.namelist():
                if n.endswith("version") or n.endswith("archive_version"):
                    return z.read(n).decode(errors="replace").strip()[:40]
    except (OSError, zipfile.BadZipFile):
        pass
    return ""


def _hub(hub: str, attr: str):
    if hub == "torchvision":
        import torchvision

        if attr not in torchvision.models.list_models():
            raise EdgekitError(f"torchvision has no model {attr!r}; expected one of "
                               "torchvision.models.list_models() (resnet18, mobilenet_v3_small, "
                               "efficientnet_b0, ...)")
        return lambda: torchvision.models.get_model(attr, weights=None)
    try:
        import timm
    except ImportError:
        raise EdgekitError(f"timm:{attr} needs timm installed (pip install timm)") from None
    if not timm.is_model(attr):
        raise EdgekitError(f"timm has no model {attr!r}; see timm.list_models()")
    return lambda: timm.create_model(attr, pretrained=False)


def _import_module(where: str):
    try:
        return importlib.import_module(where)
    except Exception as e:
        raise EdgekitError(f"module {where!r} does not import: {type(e).__name__}: "
                           f"{one_line(e, 200)}") from None


def _import_file(where: str):
    """A Python file imported under a name unique to its path, its folder importable."""
    path = Path(where).resolve()
    if not path.is_file():
        raise EdgekitError(f"model file {where!r} does not exist; expected FILE.py:NAME")
    key = "edgekit_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # its own sibling imports
    try:
        sys.modules[key] = module
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(key, None)
        raise EdgekitError(f"model file {where!r} does not import: {type(e).__name__}: "
                           f"{one_line(e, 200)}") from None
    finally:
        sys.path.remove(str(path.parent))
    return module


def pack_outputs(model, names: list[str]):
    """`model` wrapped to give its outputs (a tensor, a tuple/list or a dict of tensors) as
    one float (B, D) tensor: each flattened per input, in the order of `names`
    (edgekit.tasks.Raw splits them again)."""
    import torch

    class Packed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            got = self.model(x)
            if isinstance(got, torch.Tensor):
                parts = [got]
            elif isinstance(got, dict):
                parts = [got[n] for n in names]
            else:
                parts = list(got)
            return torch.cat([p.reshape(p.shape[0], -1).float() for p in parts], dim=1)

    return Packed().eval()
