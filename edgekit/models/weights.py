"""Pretrained weights from a local file: a .safetensors file or a torchvision .pth state dict.

Nothing is downloaded and nothing is unpickled (`torch.load(weights_only=True)`). Every tensor
of the model except the new head must be in the file with the same shape; the first one that
is not is named in a one-line error. A 3-channel stem becomes 1-channel by summing over the
colour channels, so ImageNet weights serve grayscale data.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.fileio import not_a_file

# Auxiliary classifiers a weights file may carry that a model built without them lacks.
AUX_PREFIXES = ("AuxLogits.", "aux1.", "aux2.")


def read_state_dict(path: str | Path, model_name: str = "") -> dict:
    """The tensors in a weights file, by name.

    Raises:
        EdgekitError: missing file (saying where to get torchvision's), unknown suffix, or a
            file that is not a state dict.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"model.pretrained: {str(path)!r} {not_a_file(path)}; "
                           f"{_where_to_get(model_name)}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif path.suffix in (".pth", ".pt", ".bin"):
            from edgekit.checkpoint import quiet_load

            state = quiet_load(path)
        else:
            raise EdgekitError(f"model.pretrained: {str(path)!r}: expected a .safetensors or "
                               ".pth/.pt file")
    except EdgekitError:
        raise
    except Exception as e:  # not a zip/pickle, refused by weights_only, truncated, ...
        from edgekit.checkpoint import load_failure

        raise EdgekitError(f"model.pretrained: {str(path)!r} is not a weights file: "
                           f"{load_failure(e)}") from None
    if isinstance(state, dict) and len(state) == 1 and next(iter(state)) in ("state_dict",
                                                                             "model"):
        state = next(iter(state.values()))  # a training checkpoint's weights
    if not (isinstance(state, dict) and state
            and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise EdgekitError(f"model.pretrained: {str(path)!r} is not a state dict (a mapping "
                           "of parameter names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}  # DDP-saved names


def load_pretrained(model, path: str | Path, model_name: str, skip: str) -> None:
    """Load a weights file into `model`, all but the head module `skip`.

    Raises:
        EdgekitError: the file doesn't fit the model; the message names the first key that
            doesn't match.
    """
    import torch

    state = read_state_dict(path, model_name)
    own = model.state_dict()
    stem = next((n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)), None)
    def is_head(key: str) -> bool:
        return key.startswith(skip + ".")

    keep = {}
    for key, mine in own.items():
        if is_head(key):
            continue
        theirs = state.get(key)
        if theirs is not None and key == f"{stem}.weight" and theirs.dim() == 4 \
                and theirs.shape[1] == 3 and mine.shape[1] == 1 \
                and theirs.shape[0] == mine.shape[0] and theirs.shape[2:] == mine.shape[2:]:
            theirs = theirs.sum(1, keepdim=True)  # RGB stem -> grayscale stem
        if theirs is None or theirs.shape != mine.shape:
            got = "missing from the file" if theirs is None else \
                f"file {list(theirs.shape)}, model {list(mine.shape)}"
            raise EdgekitError(f"model.pretrained: {str(path)!r} does not fit {model_name}: "
                               f"first mismatched key {key!r} ({got})")
        keep[key] = theirs
    extra = [k for k in state if k not in own and not is_head(k) and not k.startswith(AUX_PREFIXES)]
    if extra:
        raise EdgekitError(f"model.pretrained: {str(path)!r} does not fit {model_name}: "
                           f"first mismatched key {extra[0]!r} (not in the model)")
    model.load_state_dict(keep, strict=False)


def _where_to_get(model_name: str) -> str:
    try:
        import torchvision

        url = torchvision.models.get_model_weights(model_name).DEFAULT.url
    except (ValueError, KeyError, AttributeError, ImportError):
        return "expected a local .safetensors or .pth weights file"
    return f"download {url} once and pass --set model.pretrained=FILE"
