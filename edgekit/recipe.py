"""Recipes: dataclass defaults, YAML overrides, `--set` overrides, one validation for all.

Defaults live here and only here. A recipe file overrides some of them; `--set key=value`
overrides go through the same checks (unknown keys and wrong types are errors). The resolved
recipe, every default filled in, is saved beside the run.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from edgekit.errors import EdgekitError
from edgekit.fileio import not_a_file
from edgekit.losses import LOSSES
from edgekit.optim import OPTIMIZERS, SCHEDULES


@dataclass
class ModelConfig:
    name: str = "lenet5"  # a registered model, or any torchvision classification model
    dropout: float = 0.0
    pretrained: str = ""  # a local weights file (.safetensors or torchvision .pth state dict)
    freeze: bool = False  # train the new head only (with pretrained weights)
    # Sizes of the tabular and sequence models (edgekit/models/mlp.py, recurrent.py); 0 or ""
    # keeps the model's own default, and a model that has no such setting rejects it.
    hidden: int = 0  # width of each hidden layer, or of the recurrent state
    layers: int = 0  # hidden layers (mlp) or stacked recurrent layers
    activation: str = ""  # mlp: relu, tanh, sigmoid, or none (a stack of linear layers)
    embed: int = 0  # recurrent models on token indices: size of the Embedding
    stateful: bool = False  # recurrent: hidden state is an input and an output, carried


@dataclass
class DataConfig:
    name: str = "digits"
    root: str = "data"  # where the dataset is on disk (or is downloaded to)
    download: str = "auto"  # auto: download a missing torchvision dataset; never: don't try
    fallback: str = ""  # "digits": train on the offline digits when the data can't be had
    image_size: int = 32  # models see image_size x image_size inputs
    resize: int = 0  # > 0: resize the shorter side to this, then center-crop image_size
    channels: int = 0  # 1 (grayscale) or 3 (RGB); 0 keeps the dataset's own
    # mean/std of the training images ("dataset"), ImageNet's ("imagenet"), none (pixels in
    # [0, 1]), or given as "MEAN,MEAN,MEAN/STD,STD,STD" (one value each for grayscale)
    normalize: str = "dataset"
    test_fraction: float = 0.2  # held out for test accuracy where a dataset has no test split
    split_seed: int = 0
    max_train_samples: int = 0  # > 0: train on a fixed random subset of this many
    batch_size: int = 64  # the global batch: N processes under torchrun take 1/N each
    workers: int = -1  # DataLoader workers; -1: 0 on CPU, up to 4 on CUDA
    path: str = ""  # a local data file (german-credit, adult: the UCI files)
    samples: int = 0  # generated datasets: how many samples; 0: the dataset's default
    window: int = 0  # sequence datasets: steps per window; 0: the dataset's default
    text: str = ""  # character datasets: the input text; "": the dataset's default
    target: str = ""  # character datasets: the text to output, one character per input one
    encoding: str = "onehot"  # character datasets: one-hot vectors, or token indices
    shape: str = ""  # noise (an import without data): one input's shape, e.g. 1024 or 3x32x32


@dataclass
class TrainConfig:
    epochs: int = 20
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # sgd and rmsprop
    nesterov: bool = False  # sgd with momentum
    weight_decay: float = 0.0
    l1: float = 0.0  # weight of an L1 penalty on the weights, added to the loss
    grad_clip: float = 0.0  # > 0: clip the gradients' global norm to this
    loss: str = "auto"  # auto: the task's own (cross_entropy for classification)
    label_smoothing: float = 0.0  # cross_entropy only
    schedule: str = "cosine"  # per step: none, step, cosine, onecycle
    step_size: int = 10  # schedule "step": multiply lr by gamma every step_size epochs
    gamma: float = 0.1
    early_stop: int = 0  # > 0: stop after this many epochs without a better held-out metric
    backbone_lr_scale: float = 1.0  # lr of everything but the head, relative to train.lr
    seed: int = 0
    device: str = "auto"  # auto: cuda if available, else cpu
    # CPU threads for training; 0: torch's default (all cores). Tiny models train several times
    # faster on 1: their ops are too small to split, and the threads' hand-offs dominate.
    threads: int = 0
    amp: bool = True  # mixed precision, used on CUDA only (bf16 where supported, else fp16)
    channels_last: bool = True  # memory format for image models, used on CUDA only
    shift: int = 0  # augmentation: random translation by up to this many pixels (images)
    flip: bool = False  # augmentation: random horizontal flip (images)


@dataclass
class ExportConfig:
    opset: int = 18
    calibration_samples: int = 256  # training images fed through the model to set int8 ranges
    calibration_method: str = "minmax"
    per_channel: bool = True  # int8 weights per output channel (False: per tensor)
    int8_method: str = "auto"  # auto: static for conv nets, dynamic for Linear/RNN models
    parity_atol: float = 1e-4  # max |fp32 artifact - PyTorch| on held-out inputs
    fp16_atol: float = 1e-2  # the same for model.fp16.onnx (fp16 keeps ~3 decimal digits)
    max_int8_drop: float = 1.0  # accuracy points int8 may lose against fp32
    tune_seconds: float = 2.0  # timing budget per int8 candidate on this machine (0: none)
    samples: int = 16  # held-out inputs shipped with the artifacts (predict --sample)


@dataclass
class QatConfig:
    """Quantization-aware training of a finished run (edgekit.qat); epochs 0: none."""

    epochs: int = 0  # > 0: fine-tune `base` this many epochs with int8 simulated
    base: str = "latest"  # the finished run to fine-tune; latest: this recipe's newest in runs/
    lr: float = 0.0  # 0: train.lr / 2
    freeze_bn: int = -1  # epochs before BatchNorm statistics freeze; -1: 2/3 of them, rounded up
    freeze_ranges: int = -1  # epochs before the int8 ranges freeze; -1: as freeze_bn


@dataclass
class Recipe:
    name: str = "unnamed"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    qat: QatConfig = field(default_factory=QatConfig)

    @property
    def training(self) -> TrainConfig:
        """The training settings in effect: QAT fine-tunes qat.epochs at qat.lr, no warm start
        of early stopping (every epoch's ranges are kept)."""
        if not self.qat.epochs:
            return self.train
        return dataclasses.replace(self.train, epochs=self.qat.epochs,
                                   lr=self.qat.lr or self.train.lr / 2, early_stop=0,
                                   amp=False)  # fake quantization runs in float32

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# Values restricted to a fixed set: key -> allowed values.
CHOICES = {
    "data.download": ("auto", "never"),
    "data.fallback": ("", "digits"),
    "data.channels": (0, 1, 3),
    "data.encoding": ("onehot", "index"),
    "model.activation": ("", "relu", "tanh", "sigmoid", "none"),
    "train.optimizer": tuple(OPTIMIZERS),
    "train.loss": ("auto", *LOSSES),
    "train.schedule": SCHEDULES,
    "train.device": ("auto", "cpu", "cuda"),
    "export.calibration_method": ("minmax", "entropy", "percentile"),
    "export.int8_method": ("auto", "static", "dynamic"),
}
POSITIVE = {"data.image_size", "data.batch_size", "train.epochs", "train.lr", "train.step_size",
            "train.gamma", "train.backbone_lr_scale", "export.calibration_samples",
            "export.samples"}
NON_NEGATIVE = {"data.resize", "data.max_train_samples", "data.samples", "data.window",
                "model.hidden", "model.layers", "model.embed", "train.momentum",
                "train.weight_decay", "train.l1", "train.grad_clip", "train.early_stop",
                "train.shift", "train.threads", "export.parity_atol", "export.max_int8_drop",
                "export.fp16_atol", "export.tune_seconds", "qat.epochs", "qat.lr"}
# key -> (low, high): low <= value < high
RANGES = {"data.test_fraction": (1e-9, 1.0), "data.workers": (-1, 1025),
          "model.dropout": (0.0, 1.0), "train.label_smoothing": (0.0, 1.0),
          "export.opset": (17, 24), "qat.freeze_bn": (-1, 10**6),
          "qat.freeze_ranges": (-1, 10**6)}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
NORMALIZE = re.compile(rf"dataset|imagenet|none|{_NUM}(?:,{_NUM}){{0,2}}/{_NUM}(?:,{_NUM}){{0,2}}")


def recipes_dir() -> Path:
    """The folder of bundled recipes (`recipes/` in the repo, `edgekit.recipes` when installed)."""
    return Path(str(resources.files("edgekit.recipes")))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def load_recipe(name_or_path: str, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Load a bundled recipe by name, or a YAML file by path, and apply `--set` overrides.

    Args:
        name_or_path: "lenet5" (a file in recipes/) or "path/to/recipe.yaml".
        overrides: "section.key=value" strings; values are parsed as YAML scalars.

    Returns:
        The validated Recipe with every default filled in.

    Raises:
        EdgekitError: unknown recipe, unreadable YAML, unknown key, wrong type or bad value.
    """
    path = Path(name_or_path)
    # A path names a file; a bare word is a bundled recipe, even if a file of that name exists.
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        if not path.is_file():
            raise EdgekitError(f"recipe file {name_or_path!r} {not_a_file(path)}; "
                               "expected a .yaml recipe")
    else:
        path = recipes_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            choices = ", ".join(list_recipes())
            raise EdgekitError(
                f"unknown recipe {name_or_path!r}; expected one of: {choices} (or a .yaml path)"
            )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise EdgekitError(f"recipe {str(path)!r} is not valid YAML: {_one_line(e)}") from None
    if not isinstance(raw, dict):
        raise EdgekitError(f"recipe {str(path)!r} must be a mapping, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    for item in overrides:
        apply_override(raw, item)
    return from_dict(raw)


def apply_override(raw: dict, item: str) -> None:
    """Set `section.key=value` in the raw recipe dict (validated later with the rest)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise EdgekitError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=5")
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise EdgekitError(f"--set {item!r}: {part!r} is not a section")
        node = child
    try:
        node[leaf] = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        node[leaf] = value


def from_dict(raw: dict) -> Recipe:
    """Build a Recipe from a plain dict, rejecting unknown keys, wrong types and bad values."""
    recipe = _build(Recipe, raw, prefix="")
    _check_values(recipe)
    return recipe


def _build(cls, raw, prefix: str):
    if not isinstance(raw, dict):
        raise EdgekitError(f"{prefix.rstrip('.') or 'recipe'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise EdgekitError(
                f"unknown recipe key {prefix + str(key)!r}; expected one of: "
                + ", ".join(prefix + n for n in names)
            )
    kwargs = {}
    for name, value in raw.items():
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _build(typ, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(prefix + name, value, typ)
    return cls(**kwargs)


def _check_type(key: str, value, typ):
    if typ is float:
        # YAML 1.1 reads 1e-3 (no dot) as a string: accept any finite number float() takes.
        try:
            number = float(value) if isinstance(value, (str, int, float)) else math.nan
        except ValueError:
            number = math.nan
        if isinstance(value, bool) or not math.isfinite(number):
            raise EdgekitError(f"{key}: expected float, got {value!r}")
        return number
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }[typ]
    if not ok(value):
        raise EdgekitError(f"{key}: expected {typ.__name__}, got {value!r}")
    return value


def _check_values(recipe: Recipe) -> None:
    flat = {
        f"{section}.{k}": v
        for section, values in recipe.to_dict().items()
        if isinstance(values, dict)
        for k, v in values.items()
    }
    for key, allowed in CHOICES.items():
        if flat[key] not in allowed:
            shown = ", ".join(str(a) or "''" for a in allowed)
            raise EdgekitError(f"{key}: expected one of {shown}, got {flat[key]!r}")
    for key in POSITIVE:
        if not flat[key] > 0:
            raise EdgekitError(f"{key}: expected a value > 0, got {flat[key]!r}")
    for key in NON_NEGATIVE:
        if not flat[key] >= 0:
            raise EdgekitError(f"{key}: expected a value >= 0, got {flat[key]!r}")
    for key, (low, high) in RANGES.items():
        if not low <= flat[key] < high:
            what = "a fraction between 0 and 1" if low == 1e-9 else f"{low} <= value < {high}"
            raise EdgekitError(f"{key}: expected {what}, got {flat[key]!r}")
    if recipe.data.shape and not re.fullmatch(r"[1-9]\d*(x[1-9]\d*)*", recipe.data.shape):
        raise EdgekitError(f"data.shape: expected sizes like 3x32x32, got {recipe.data.shape!r}")
    if not NORMALIZE.fullmatch(recipe.data.normalize):
        raise EdgekitError(f"data.normalize: expected dataset, imagenet, none or MEAN/STD values "
                           f"like 0.5,0.5,0.5/0.25,0.25,0.25, got {recipe.data.normalize!r}")
    if recipe.data.resize and recipe.data.resize < recipe.data.image_size:
        raise EdgekitError(f"data.resize: expected 0 or >= data.image_size "
                           f"({recipe.data.image_size}), got {recipe.data.resize}")
    if recipe.train.label_smoothing and recipe.train.loss not in ("auto", "cross_entropy"):
        raise EdgekitError(f"train.label_smoothing applies to cross_entropy, not "
                           f"{recipe.train.loss}; set it to 0")
    if recipe.train.nesterov and not (recipe.train.optimizer == "sgd" and recipe.train.momentum):
        raise EdgekitError("train.nesterov needs train.optimizer=sgd and train.momentum > 0")
    if recipe.model.freeze and not recipe.model.pretrained:
        raise EdgekitError("model.freeze needs model.pretrained (a weights file to keep)")
    if not NAME.fullmatch(recipe.name):
        raise EdgekitError(f"name: expected letters, digits, '_', '-' or '.', got {recipe.name!r}")


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())
