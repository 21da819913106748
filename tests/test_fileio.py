import os

import pytest

from edgekit.fileio import atomic_dir, atomic_path, write_json


def test_atomic_path_writes_only_on_success(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"x": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == '{\n  "x": 1\n}\n'
    assert os.listdir(tmp_path) == ["a.json"]


def test_atomic_file_has_ordinary_permissions(tmp_path):
    write_json(tmp_path / "a.json", {})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_atomic_dir_replaces_the_old_one_only_on_success(tmp_path):
    out = tmp_path / "export"
    with atomic_dir(out) as stage:
        (stage / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out) as stage:
        (stage / "new.txt").write_text("new")
        raise RuntimeError("check failed")
    assert sorted(os.listdir(out)) == ["old.txt"]
    with atomic_dir(out) as stage:
        (stage / "new.txt").write_text("new")
    assert sorted(os.listdir(out)) == ["new.txt"]
    assert os.listdir(tmp_path) == ["export"]
