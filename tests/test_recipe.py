import dataclasses

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from edgekit.errors import EdgekitError
from edgekit.recipe import MAXIMA, Recipe, from_dict, list_recipes, load_recipe


@pytest.mark.parametrize("name", list_recipes())
def test_bundled_recipe_is_valid(name):
    recipe = load_recipe(name)
    assert recipe.name == name
    assert recipe.description, "every bundled recipe says what it is"
    assert from_dict(yaml.safe_load(recipe.to_yaml())) == recipe


def test_lenet5_is_the_offline_default():
    recipe = load_recipe("lenet5")
    assert (recipe.model.name, recipe.data.name) == ("lenet5", "digits")


def test_defaults_fill_what_a_recipe_leaves_out(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  epochs: 3\n")
    recipe = load_recipe(str(path))
    assert recipe.name == "mine"
    assert recipe.train.epochs == 3
    assert recipe.train.lr == Recipe().train.lr
    assert recipe.export == Recipe().export


def test_overrides_are_parsed_as_yaml_scalars():
    recipe = load_recipe("lenet5", ["train.epochs=5", "train.lr=0.01", "train.amp=false",
                                    "train.optimizer=sgd", "export.max_int8_drop=2"])
    assert recipe.train.epochs == 5
    assert recipe.train.lr == 0.01
    assert recipe.train.amp is False
    assert recipe.train.optimizer == "sgd"
    assert recipe.export.max_int8_drop == 2.0 and isinstance(recipe.export.max_int8_drop, float)


@pytest.mark.parametrize("override, message", [
    ("train.epoch=5", "unknown recipe key 'train.epoch'; expected one of: train.epochs,"),
    ("trian.epochs=5", "unknown recipe key 'trian'"),
    ("train.epochs=abc", "train.epochs: expected int, got 'abc'"),
    ("train.epochs=2.5", "train.epochs: expected int, got 2.5"),
    ("train.epochs=true", "train.epochs: expected int, got True"),
    ("train.amp=1", "train.amp: expected bool, got 1"),
    ("train.epochs=0", "train.epochs: expected a value > 0, got 0"),
    ("train.optimizer=lbfgs", "train.optimizer: expected one of sgd, rmsprop, adagrad, adadelta, "
                              "adam, adamw, adamax, got 'lbfgs'"),
    ("data.test_fraction=1.5", "data.test_fraction: expected a fraction between 0 and 1"),
    ("train.shift=-1", "train.shift: expected a value >= 0, got -1"),
    ("train", "--set 'train': expected KEY=VALUE"),
    ("train=5", "train: expected a mapping, got 5"),
    ("train.epochs.x=5", "'epochs' is not a section"),
    ("train.lr=inf", "train.lr: expected float, got 'inf'"),
    ("train.lr=.nan", "train.lr: expected float, got nan"),
    ("train.lr=true", "train.lr: expected float, got True"),
    ("model.dropout=1.5", "model.dropout: expected 0.0 <= value < 1.0, got 1.5"),
    ("train.label_smoothing=2", "train.label_smoothing: expected 0.0 <= value < 1.0, got 2.0"),
    ("export.opset=7", "export.opset: expected 17 <= value < 24, got 7"),
    ("name=../../etc", "name: expected letters, digits, '_', '-' or '.', got '../../etc'"),
])
def test_bad_override_is_named(override, message):
    with pytest.raises(EdgekitError) as err:
        load_recipe("lenet5", [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text", ["1e-3", "1.0e-3", "0.001", "1E-3"])
def test_float_in_any_notation(text, tmp_path):
    # YAML 1.1 reads "1e-3" as a string; users write learning rates that way.
    assert load_recipe("lenet5", [f"train.lr={text}"]).train.lr == 0.001
    path = tmp_path / "r.yaml"
    path.write_text(f"train:\n  lr: {text}\n")
    assert load_recipe(str(path)).train.lr == 0.001


def test_a_file_in_the_working_directory_does_not_shadow_a_bundled_recipe(tmp_path,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lenet5").write_text("not: [a recipe")
    assert load_recipe("lenet5").model.name == "lenet5"
    (tmp_path / "mine.yaml").write_text("train: {epochs: 2}\n")
    assert load_recipe("mine.yaml").train.epochs == 2


def test_recipe_file_that_is_not_text(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(EdgekitError, match="is not valid YAML"):
        load_recipe(str(path))


def test_unknown_recipe_lists_the_valid_ones():
    with pytest.raises(EdgekitError, match=r"unknown recipe 'nope'; expected one of: .*lenet5"):
        load_recipe("nope")


def test_missing_recipe_file(tmp_path):
    with pytest.raises(EdgekitError, match="does not exist"):
        load_recipe(str(tmp_path / "missing.yaml"))
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(EdgekitError, match="'.*dir.yaml' is not a file; expected a .yaml recipe"):
        load_recipe(str(tmp_path / "dir.yaml"))


@pytest.mark.parametrize("text, message", [
    ("train: [1, 2\n", "is not valid YAML"),
    ("- a\n- b\n", "must be a mapping"),
    ("model:\n  name: lenet5\n  depth: 3\n", "unknown recipe key 'model.depth'"),
])
def test_bad_recipe_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(EdgekitError, match=message):
        load_recipe(str(path))


@given(st.integers(min_value=1, max_value=MAXIMA["train.epochs"]))
def test_any_positive_epoch_count_up_to_the_bound_round_trips(n):
    assert load_recipe("lenet5", [f"train.epochs={n}"]).train.epochs == n


@given(st.integers(min_value=MAXIMA["train.epochs"] + 1, max_value=10**30))
def test_an_epoch_count_over_the_bound_is_one_line(n):
    with pytest.raises(EdgekitError, match=f"train.epochs: expected at most "
                                           f"{MAXIMA['train.epochs']}, got {n}$"):
        load_recipe("lenet5", [f"train.epochs={n}"])


@given(st.text(alphabet=st.characters(categories=["L"]), min_size=1, max_size=8))
def test_words_are_never_accepted_as_numbers(word):
    if word.lower() in {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan"}:
        word += "x"
    with pytest.raises(EdgekitError, match="train.lr: expected float"):
        load_recipe("lenet5", [f"train.lr={word}"])


def test_every_field_has_a_default():
    recipe = Recipe()
    for section in ("model", "data", "train", "export"):
        for f in dataclasses.fields(getattr(recipe, section)):
            assert f.default is not dataclasses.MISSING, f"{section}.{f.name}"
