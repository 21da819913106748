"""The benchmark suite's machinery: the machine facts in the JSON, and models built once.

`make bench` runs `pytest benchmarks --benchmark-only --benchmark-json FILE`. Every model is
trained briefly and exported through edgekit's own train -> export path (latency does not
depend on accuracy), once per session. Environment:

    EDGEKIT_BENCH_MODELS=lenet5,resnet18      only these models
    EDGEKIT_BENCH_RUNS=lenet5=runs/demo,...   time these exported runs instead of training
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The test helpers (tests/basevenv.py) serve the benchmarks too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

# Benchmark model -> (recipe, --set overrides): the shortest training that exports.
MODELS = {
    "lenet5": ("lenet5", ["train.epochs=2"]),
    "mobilenet_v2": ("mobilenet_v2", ["train.epochs=1", "data.image_size=224"]),
    "resnet18": ("resnet18", ["train.epochs=1", "data.image_size=224"]),
    "lstm": ("hello-lstm", []),
}
OVERHEAD = pytest.StashKey[list]()


def pytest_benchmark_update_machine_info(config, machine_info):
    """Put edgekit's machine facts (ISA flags, board, emulation ...) in the JSON's machine_info.

    `edgekit bench compare` reads them from machine_info["edgekit"].
    """
    from edgekit.machine import machine_info as facts

    machine_info["edgekit"] = facts()


def pytest_configure(config):
    config.stash[OVERHEAD] = []


def pytest_terminal_summary(terminalreporter, config):
    lines = config.stash.get(OVERHEAD, [])
    if lines:
        terminalreporter.section("edgekit harness overhead")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def overhead_log(pytestconfig) -> list:
    """Lines for the end-of-run summary (the harness overhead figures)."""
    return pytestconfig.stash[OVERHEAD]


def selected_models() -> list[str]:
    """The benchmark models to run: EDGEKIT_BENCH_MODELS (comma-separated) or all."""
    wanted = [m for m in os.environ.get("EDGEKIT_BENCH_MODELS", "").split(",") if m]
    unknown = sorted(set(wanted) - set(MODELS))
    if unknown:
        raise pytest.UsageError(f"EDGEKIT_BENCH_MODELS: unknown {', '.join(unknown)}; "
                                f"expected some of {', '.join(MODELS)}")
    return wanted or list(MODELS)


def pytest_collection_modifyitems(config, items):
    keep = set(selected_models())
    chosen = [i for i in items if getattr(i, "callspec", None) is None
              or i.callspec.params.get("model", next(iter(keep))) in keep]
    config.hook.pytest_deselected(items=[i for i in items if i not in chosen])
    items[:] = chosen


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """exported(model) -> the run directory of that benchmark model, trained and exported once.

    Skips when this checkout has no such recipe yet. Exports every format the registry knows.
    """
    runs: dict[str, Path] = {}

    given = dict(item.split("=", 1) for item in
                 os.environ.get("EDGEKIT_BENCH_RUNS", "").split(",") if "=" in item)

    def build(model: str) -> Path:
        if model in given:
            return Path(given[model])
        if model not in runs:
            from edgekit import formats
            from edgekit.exporting import export
            from edgekit.recipe import list_recipes, load_recipe
            from edgekit.training import train

            recipe, overrides = MODELS[model]
            if recipe not in list_recipes():
                pytest.skip(f"recipe {recipe!r} is not in this checkout yet")
            run = train(load_recipe(recipe, overrides),
                        tmp_path_factory.mktemp("bench") / model, progress=False)
            # Under-trained on purpose: int8 may drift more than a real run's export allows.
            export(run, [f.name for f in formats.formats() if f.precision != "fp16"],
                   max_int8_drop=100)
            runs[model] = run
        return runs[model]

    return build
