"""Small files in the exact formats of the UCI downloads, with a signal a model can learn.

    german.data-numeric   24 integers and a label 1/2 per line, each right-aligned in 4
                          characters, a trailing space (as the UCI file)
    adult.data            14 values and the label, separated by ", ", "?" for missing values,
                          a blank last line; adult.test starts with "|1x3 Cross validator"
                          and ends each label with "."
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORKCLASS = ["Private", "Self-emp-not-inc", "Self-emp-inc", "Federal-gov", "Local-gov",
             "State-gov", "Without-pay", "?"]
EDUCATION = [("Preschool", 1), ("5th-6th", 3), ("9th", 5), ("11th", 7), ("HS-grad", 9),
             ("Some-college", 10), ("Assoc-voc", 11), ("Bachelors", 13), ("Masters", 14),
             ("Doctorate", 16)]
MARITAL = ["Married-civ-spouse", "Never-married", "Divorced", "Separated", "Widowed"]
OCCUPATION = ["Tech-support", "Craft-repair", "Other-service", "Sales", "Exec-managerial",
              "Prof-specialty", "Adm-clerical", "Farming-fishing", "?"]
RELATIONSHIP = ["Wife", "Own-child", "Husband", "Not-in-family", "Unmarried"]
RACE = ["White", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other", "Black"]
COUNTRY = ["United-States", "Mexico", "Philippines", "Germany", "Canada", "India", "?"]


def write_german(path: Path, rows: int = 400, seed: int = 0) -> Path:
    """german.data-numeric: column 1 (checking account) and 2 (duration) drive the label."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(rows):
        a = np.concatenate([
            [rng.integers(1, 5), rng.integers(4, 73), rng.integers(0, 5), rng.integers(2, 185),
             rng.integers(1, 6), rng.integers(1, 6), rng.integers(1, 5), rng.integers(1, 5),
             rng.integers(1, 5), rng.integers(19, 76), rng.integers(1, 4), rng.integers(1, 5),
             rng.integers(1, 3), rng.integers(1, 3), rng.integers(1, 3)],
            rng.integers(0, 2, 9)])
        risk = 1.6 * (a[0] <= 2) + 0.05 * (a[1] - 20) - 0.6 * (a[2] >= 3) \
            + rng.normal(0, 0.6)
        label = 2 if risk > 1.0 else 1
        lines.append("".join(f"{int(v):4d}" for v in [*a, label]) + " \n")
    path.write_text("".join(lines))
    return path


def write_adult(path: Path, rows: int = 1500, seed: int = 0, test_format: bool = False) -> Path:
    """adult.data: education, marriage, age, hours and capital gain drive the label."""
    rng = np.random.default_rng(seed)
    lines = ["|1x3 Cross validator\n"] if test_format else []
    for _ in range(rows):
        age = int(rng.integers(17, 80))
        edu, edu_num = EDUCATION[rng.integers(len(EDUCATION))]
        marital = MARITAL[rng.integers(len(MARITAL))]
        hours = int(np.clip(rng.normal(40, 12), 1, 99))
        gain = int(rng.choice([0, 0, 0, 0, 0, 0, 0, 0, 2174, 15024]))
        score = 0.45 * (edu_num - 9) + 1.8 * (marital == "Married-civ-spouse") \
            + 0.04 * (age - 38) + 0.04 * (hours - 40) + 3.0 * (gain > 5000) \
            + rng.normal(0, 0.5) - 1.4
        label = ">50K" if score > 0 else "<=50K"
        values = [age, WORKCLASS[rng.integers(len(WORKCLASS))], int(rng.integers(12285, 1484706)),
                  edu, edu_num, marital, OCCUPATION[rng.integers(len(OCCUPATION))],
                  RELATIONSHIP[rng.integers(len(RELATIONSHIP))], RACE[rng.integers(len(RACE))],
                  "Male" if rng.random() < 0.67 else "Female", gain,
                  int(rng.choice([0, 0, 0, 1902])), hours,
                  COUNTRY[rng.integers(len(COUNTRY))], label + ("." if test_format else "")]
        lines.append(", ".join(map(str, values)) + "\n")
    path.write_text("".join(lines) + "\n")
    return path


def write_all(folder: Path) -> dict[str, Path]:
    """dataset name -> a file in its UCI format."""
    return {"german-credit": write_german(folder / "german.data-numeric"),
            "adult": write_adult(folder / "adult.data")}


def data_overrides(recipe, files: dict[str, Path]) -> list[str]:
    """The `--set` that points a recipe at its local file, if its dataset reads one."""
    path = files.get(recipe.data.name)
    return [f"data.path={path}"] if path else []
