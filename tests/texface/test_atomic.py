"""texface.atomic: directories, files and sets of outputs appear complete or not at all."""
from __future__ import annotations

import os

import pytest

from texface.atomic import atomic_directory, atomic_file, staging, write_text


def test_atomic_directory_replaces_only_on_success(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("one")
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("two")
        raise RuntimeError("crash while writing")
    assert (target / "a.txt").read_text() == "one" and os.listdir(tmp_path) == ["ckpt"]
    with atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("new")
    assert os.listdir(target) == ["b.txt"] and os.listdir(tmp_path) == ["ckpt"]


def test_atomic_file_and_write_text(tmp_path):
    write_text(tmp_path / "r.json", "{}")
    with pytest.raises(OSError), atomic_file(tmp_path / "r.json") as tmp:
        tmp.write_text("half")
        raise OSError("disk full")
    assert (tmp_path / "r.json").read_text() == "{}" and os.listdir(tmp_path) == ["r.json"]


def test_staging_moves_every_output_or_none(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError), staging(out) as stage:
        (stage / "grid.png").write_text("x")
        raise ValueError("bad request found late")
    assert out.is_dir() and os.listdir(out) == []
    with staging(out) as stage:
        (stage / "grid.png").write_text("x")
        (stage / "latents.pt").write_text("y")
    assert sorted(os.listdir(out)) == ["grid.png", "latents.pt"]
