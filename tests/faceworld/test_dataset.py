"""Face-world datasets on disk: the CLI, the EG3D layout, ground truth joined by image name, atomicity, the cache."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from faceworld import (
    BACKGROUND,
    RAY_END,
    RAY_START,
    FaceWorld,
    datadir,
    ensure_dataset,
    read_image,
    read_index,
    write_dataset,
)
from faceworld.dataset import main
from texface.captions import ATTRIBUTES
from texface.errors import ConfigError

ARGS = ["--heads", "3", "--views", "2", "--resolution", "32", "--seed", "4", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("fw") / "set"
    assert main([str(path), *ARGS]) == 0
    return path


def test_layout_and_labels(dataset):
    labels = json.loads((dataset / "dataset.json").read_text())["labels"]
    assert [name for name, _ in labels] == [f"images/00000/img{i:08d}.png" for i in range(6)]
    cameras = torch.tensor([label for _, label in labels])
    assert cameras.shape == (6, 25) and torch.isfinite(cameras).all()
    assert torch.allclose(cameras, FaceWorld(0).sample_cameras(6, seed=4))
    for name, _ in labels:
        image, mask, depth = (read_image(dataset, name, kind) for kind in ("images", "masks", "depth"))
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert mask.shape == (32, 32) and 0 <= mask.min() and mask.max() <= 1 and mask.mean() > 0.2
        assert depth.shape == (32, 32) and depth.min() >= RAY_START and depth.max() <= RAY_END
        empty = mask == 0
        assert np.all(depth[empty] == RAY_END)
        assert np.abs(image[empty].astype(int) - np.round(np.array(BACKGROUND) * 255)).max() <= 1
        assert np.all(depth[mask > 0.99] < 3.0)
    assert (dataset / "preview.png").is_file()


def test_ground_truth_joins_by_name(dataset):
    index = read_index(dataset)
    heads = FaceWorld(0).sample(3, seed=4)
    assert len(index) == 6 and index.expressions.shape == (6, 50)
    by_name = dict(zip(index.names, index.captions))
    for i, (name, row) in enumerate(zip(index.names, index.heads)):
        h = i // 2
        assert row["image"] == name and row["head"] == h and row["view"] == i % 2
        assert row["latent"] == pytest.approx(heads.latents[h].tolist()) and row["head_id"] == heads.ids[h]
        assert row["levels"] == {a: int(heads.levels[a][h]) for a in ATTRIBUTES}
        assert np.allclose(row["identity"], heads.identity[h].numpy())
        assert by_name[name] == heads.captions[h]  # every view of a head shares its captions
        assert torch.equal(index.expressions[i], heads.expressions[h])
    description = index.description
    assert description["heads"] == 3 and description["views"] == 2 and description["seed"] == 4
    assert FaceWorld(**description["world"]).config == FaceWorld(0).config


def test_images_can_be_regenerated(dataset):
    index = read_index(dataset)
    world = FaceWorld(**index.description["world"])
    heads = world.sample(index.description["heads"], index.description["seed"])
    out = world.render(heads.subset([2]), index.cameras[5:6], 32)
    image = read_image(dataset, index.names[5])
    again = (out["image"][0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
    assert np.abs(image.astype(int) - again.astype(int)).max() <= 1


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("bad", [["--heads", "0"], ["--heads", "x"], ["--views", "-1"], ["--resolution", "4"],
                                 ["--device", "tpu"], ["--bogus"]])
def test_bad_arguments(tmp_path, capsys, bad):
    try:
        code = main([str(tmp_path / "out"), *ARGS, *bad])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_refuses_other_directories_and_replaces_only_with_force(tmp_path, capsys, dataset):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main([str(other), *ARGS]) == 2
    assert "not a face-world dataset" in _one_error_line(capsys)
    assert main([str(other), *ARGS, "--force"]) == 2
    assert (other / "notes.txt").read_text() == "keep me"

    target = tmp_path / "set"
    assert main([str(target), *ARGS]) == 0
    capsys.readouterr()
    assert main([str(target), *ARGS]) == 2
    assert "--force" in _one_error_line(capsys)
    before = json.loads((target / "dataset.json").read_text())["labels"]
    assert main([str(target), *ARGS[:-3], "--seed", "9", "--no-progress", "--force"]) == 0
    after = json.loads((target / "dataset.json").read_text())["labels"]
    assert after != before and json.loads((target / "world.json").read_text())["seed"] == 9


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(FaceWorld, "render", broken)
    with pytest.raises(RuntimeError):
        write_dataset(tmp_path / "out", heads=2, views=1, resolution=32, device="cpu", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_ensure_dataset_reuses_identical_settings(tmp_path, monkeypatch):
    path = ensure_dataset(tmp_path, 2, 1, 32, seed=1, device="cpu", progress=False)
    assert read_index(path).description["heads"] == 2

    def no_rewrite(*args, **kwargs):
        raise AssertionError("an identical dataset was rendered again")

    monkeypatch.setattr(datadir, "write_dataset", no_rewrite)
    assert ensure_dataset(tmp_path, 2, 1, 32, seed=1, device="cpu") == path
    assert datadir.cache_key(FaceWorld(0), 2, 1, 32, 2) != datadir.cache_key(FaceWorld(0), 2, 1, 32, 1)
    with pytest.raises(ConfigError):
        write_dataset(tmp_path / "x", heads=1, views=1, resolution=32, batch_size=0, device="cpu")


def test_module_entry_point(tmp_path):
    result = subprocess.run([sys.executable, "-m", "faceworld.dataset", str(tmp_path / "out"), "--heads", "-2"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: heads must be an integer >= 1, got -2"]
