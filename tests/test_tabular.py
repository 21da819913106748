"""Tabular data: the UCI loaders on files in their exact formats, and the `tabular` encoding."""

import numpy as np
import pytest
from uci_files import write_adult, write_german

from edgekit.data import build_dataset
from edgekit.errors import EdgekitError
from edgekit.recipe import DataConfig, load_recipe
from edgekit.runtime.preprocess.array import to_batch
from edgekit.runtime.preprocess.tabular import from_csv, rows_to_array


def test_german_credit_reads_the_numeric_file_and_standardizes_on_train(uci_files):
    data = build_dataset(DataConfig(name="german-credit", path=str(uci_files["german-credit"]),
                                    test_fraction=0.1))
    assert (len(data.train), len(data.test)) == (360, 40)  # 400 rows, 90/10 (900/100 for UCI's)
    assert data.labels == ["good", "bad"] and data.input_shape == (24,)
    assert np.allclose(data.train.x.mean(0), 0, atol=1e-5)
    assert np.allclose(data.train.x.std(0), 1, atol=1e-3)
    cols = data.preprocess["columns"]
    assert [c["name"] for c in cols] == [f"a{i}" for i in range(1, 25)]
    # The first line of the file, as a CSV row on the Pi, gives the first row's features.
    first = uci_files["german-credit"].read_text().splitlines()[0].split()
    row = rows_to_array([dict(zip([c["name"] for c in cols], first[:24], strict=True))],
                        data.preprocess)
    assert any(np.allclose(row[0], x, atol=1e-6) for x in np.concatenate(
        [data.train.x, data.test.x]))


def test_adult_reads_the_comma_space_csv_with_missing_values(uci_files):
    data = build_dataset(DataConfig(name="adult", path=str(uci_files["adult"])))
    assert len(data.train) + len(data.test) == 1500 and data.input_shape == (14,)
    cols = {c["name"]: c for c in data.preprocess["columns"]}
    assert cols["workclass"]["type"] == "category" and "?" in cols["workclass"]["values"]
    assert cols["age"]["type"] == "numeric" and 17 <= cols["age"]["mean"] <= 80
    assert data.labels == ["<=50K", ">50K"]
    # Stratified: the test split keeps the label balance of the file.
    assert abs(data.test.y.mean() - data.train.y.mean()) < 0.02


def test_adult_test_file_format_and_a_header_row(tmp_path):
    test = write_adult(tmp_path / "adult.test", rows=300, test_format=True)
    a = build_dataset(DataConfig(name="adult", path=str(test)))
    assert len(a.train) + len(a.test) == 300  # "|1x3 ..." skipped, "<=50K." read as "<=50K"
    header = tmp_path / "with-header.csv"
    lines = (tmp_path / "adult.test").read_text().splitlines()[1:]
    header.write_text("age, workclass, fnlwgt, education, education-num, marital-status, "
                      "occupation, relationship, race, sex, capital-gain, capital-loss, "
                      "hours-per-week, native-country, income\n" + "\n".join(lines) + "\n")
    b = build_dataset(DataConfig(name="adult", path=str(header)))
    np.testing.assert_array_equal(a.test.x, b.test.x)


@pytest.mark.parametrize("dataset, path, message", [
    ("adult", "", r"adult reads the UCI file adult.data: download it once from "
                  r"https://archive.ics.uci.edu/dataset/2 \(Adult\) and pass --set data.path=FILE"),
    ("german-credit", "nowhere/german.data-numeric",
     r"data.path 'nowhere/german.data-numeric' does not exist; expected the UCI file "
     r"german.data-numeric \(download it from https://archive.ics.uci.edu/dataset/144"),
])
def test_a_missing_file_names_the_path_and_where_to_get_it(dataset, path, message):
    with pytest.raises(EdgekitError, match=message):
        build_dataset(DataConfig(name=dataset, path=path))


def test_malformed_lines_are_named(tmp_path):
    bad = tmp_path / "german.data-numeric"
    write_german(bad, rows=5)
    bad.write_text(bad.read_text() + "   1   2   3\n")
    with pytest.raises(EdgekitError, match=r"line 6: expected 24 numbers and a label 1 or 2"):
        build_dataset(DataConfig(name="german-credit", path=str(bad)))
    adult = write_adult(tmp_path / "adult.data", rows=5)
    adult.write_text(adult.read_text().replace(", <=50K", ", maybe", 1)
                     .replace(", >50K", ", maybe", 1))
    with pytest.raises(EdgekitError, match=r"line \d: expected 14 values and a label <=50K"):
        build_dataset(DataConfig(name="adult", path=str(adult)))


SPEC = {"kind": "tabular", "columns": [
    {"name": "age", "type": "numeric", "mean": 40.0, "std": 10.0},
    {"name": "sex", "type": "category", "values": ["Female", "Male"], "mean": 0.5, "std": 0.5},
]}


def test_rows_encode_by_name_and_errors_name_the_column():
    x = rows_to_array([{"age": "50", "sex": "Male", "other": "x"}, {"age": "?", "sex": "Female"}],
                      SPEC)
    np.testing.assert_allclose(x, [[1.0, 1.0], [0.0, -1.0]])
    with pytest.raises(EdgekitError, match=r"missing column 'sex'; expected columns: age, sex"):
        rows_to_array([{"age": 3}], SPEC)
    with pytest.raises(EdgekitError, match=r"column 'sex': unseen category 'Other'; expected one "
                                           r"of: Female, Male"):
        rows_to_array([{"age": 3, "sex": "Other"}], SPEC)
    with pytest.raises(EdgekitError, match=r"row 2: column 'age': expected a number, got 'old'"):
        rows_to_array([{"age": 3, "sex": "Male"}, {"age": "old", "sex": "Male"}], SPEC)


def test_csv_rows_with_a_header_or_in_training_order():
    rows = from_csv("sex, age\nMale, 50\n", SPEC, "x.csv")
    assert rows == [{"sex": "Male", "age": "50"}]
    assert from_csv("50, Male\n", SPEC, "x.csv") == [{"age": "50", "sex": "Male"}]
    with pytest.raises(EdgekitError, match="names none of the columns and has 3 fields, not 2"):
        from_csv("1, 2, 3\n", SPEC, "x.csv")
    with pytest.raises(EdgekitError, match="line 2 has 1 fields; the header has 2"):
        from_csv("age, sex\n50\n", SPEC, "x.csv")


def test_array_input_takes_one_or_a_batch():
    spec = {"kind": "array", "shape": [10, 1]}
    assert to_batch(np.zeros((10, 1)), spec).shape == (1, 10, 1)
    assert to_batch(np.zeros((3, 10, 1), np.float64), spec).dtype == np.float32
    with pytest.raises(EdgekitError, match=r"expected numbers of shape \(10, 1\) \(one input\) "
                                           r"or \(B, 10, 1\) \(a batch\); got \(10,\)"):
        to_batch(np.zeros(10), spec)
    with pytest.raises(EdgekitError, match="holds NaN"):
        to_batch(np.full((10, 1), np.nan), spec)


@pytest.mark.parametrize("recipe", ["logreg-credit", "adult-tabular"])
def test_tabular_recipes_train_through_the_real_loaders(recipe, uci_files):
    from uci_files import data_overrides

    from edgekit.loop import fit

    r = load_recipe(recipe)
    r = load_recipe(recipe, data_overrides(r, uci_files))
    history = fit(r, build_dataset(r.data), progress=False).history
    assert history[-1]["test_accuracy"] >= 0.8
