"""The encoder's data: EG3D folders and zips, the official test layout, face-world datasets, the DataModules."""
from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from faceworld import datadir, read_index, write_dataset
from inversion.data import CameraFolder, EG3DData, EG3DImages, FaceWorldData
from texface.config import instantiate
from texface.errors import DataFormatError

CONF = Path(__file__).resolve().parents[2] / "conf"
SIZE = 32


def _pixels(i: int, size: int = SIZE) -> np.ndarray:
    """A deterministic RGB uint8 (size, size, 3) image."""
    return np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _camera(i: int) -> list[float]:
    return [float(i * 100 + k) for k in range(25)]


def write_eg3d(root: Path, n: int = 3) -> Path:
    """An EG3D folder: n images in a subfolder and dataset.json."""
    (root / "00000").mkdir(parents=True)
    labels = []
    for i in range(n):
        name = f"00000/img{i:08d}.png"
        Image.fromarray(_pixels(i)).save(root / name)
        labels.append([name, _camera(i)])
    (root / "dataset.json").write_text(json.dumps({"labels": labels}))
    return root


def zip_folder(folder: Path, out: Path, top: str = "") -> Path:
    with zipfile.ZipFile(out, "w") as z:
        for path in sorted(folder.rglob("*")):
            z.write(path, top + path.relative_to(folder).as_posix())
    return out


@pytest.fixture(scope="module")
def world_set(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fw") / "set"
    write_dataset(path, heads=2, views=2, resolution=SIZE, seed=0, device="cpu", progress=False)
    return path


def test_folder_items_and_exact_transform(tmp_path):
    data = EG3DImages(write_eg3d(tmp_path / "d"), resolution=SIZE)
    assert len(data) == 3
    item = data[1]
    assert set(item) == {"image", "camera", "name"} and item["name"] == "00000/img00000001.png"
    assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.float32
    assert item["camera"].dtype == torch.float32 and item["camera"].tolist() == _camera(1)
    assert -1 <= item["image"].min() and item["image"].max() <= 1
    pixel = _pixels(1)[5, 7]                                     # (3,) uint8 at row 5, column 7
    assert torch.equal(item["image"][:, 5, 7], torch.tensor(pixel, dtype=torch.float32) / 127.5 - 1)
    resized = EG3DImages(tmp_path / "d", resolution=16)[0]["image"]
    assert resized.shape == (3, 16, 16) and -1 <= resized.min() and resized.max() <= 1


def test_indices_and_limit(tmp_path):
    root = write_eg3d(tmp_path / "d")
    assert [item["name"] for item in EG3DImages(root, indices=[2, 0], resolution=SIZE)] == [
        "00000/img00000002.png", "00000/img00000000.png"]
    assert len(EG3DImages(root, limit=2)) == 2


@pytest.mark.parametrize("top", ["", "final_crops/"])
def test_zip_matches_folder(tmp_path, top):
    folder = write_eg3d(tmp_path / "d")
    data = EG3DImages(zip_folder(folder, tmp_path / "d.zip", top), resolution=SIZE)
    expected = EG3DImages(folder, resolution=SIZE)
    assert len(data) == 3
    for a, b in zip(data, expected):
        assert a["name"] == b["name"] and torch.equal(a["image"], b["image"]) and torch.equal(a["camera"], b["camera"])
    # Workers get a copy of the dataset (pickled when spawned, forked otherwise): each opens the zip itself.
    assert torch.equal(copy.deepcopy(data)[0]["image"], expected[0]["image"])
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=3, num_workers=1)))
    assert batch["image"].shape == (3, 3, SIZE, SIZE)


def test_camera_folder(tmp_path):
    for i in range(2):
        Image.fromarray(_pixels(i)).save(tmp_path / f"{i:02d}.png")
        np.save(tmp_path / f"{i:02d}.npy", np.array(_camera(i), dtype=np.float32))
    data = CameraFolder(tmp_path, resolution=16)
    assert len(data) == 2
    item = data[1]
    assert set(item) == {"image", "camera", "name"} and item["name"] == "01.png"
    assert item["image"].shape == (3, 16, 16) and item["camera"].tolist() == _camera(1)


def test_faceworld_items_carry_mask_and_latent(world_set):
    data = EG3DImages(world_set, resolution=SIZE)
    heads = read_index(world_set).heads
    assert len(data) == 4
    for i, item in enumerate(data):
        assert set(item) == {"image", "camera", "name", "mask", "latent"}
        assert item["mask"].shape == (1, SIZE, SIZE) and 0 <= item["mask"].min() and item["mask"].max() <= 1
        assert item["mask"].mean() > 0.1
        assert torch.equal(item["latent"], torch.tensor(heads[i]["latent"], dtype=torch.float32))
    assert torch.equal(data[0]["latent"], data[1]["latent"]) and not torch.equal(data[0]["latent"], data[2]["latent"])
    mask = EG3DImages(world_set, resolution=16)[0]["mask"]       # area: the mean of each 2x2 block
    full = data[0]["mask"]
    assert torch.allclose(mask, full.reshape(1, 16, 2, 16, 2).mean((2, 4)))
    grown = EG3DImages(world_set, resolution=64)[0]["mask"]      # area when growing x2: pixel repetition
    assert torch.equal(grown, full.repeat_interleave(2, 1).repeat_interleave(2, 2))


def test_faceworld_datamodule_end_to_end_and_cache(tmp_path, monkeypatch):
    kwargs = {"cache_dir": tmp_path / "cache", "train_heads": 2, "val_heads": 2, "views": 2,
              "render_resolution": SIZE, "resolution": SIZE, "batch_size": 2, "num_workers": 0, "device": "cpu",
              "progress": False}
    dm = FaceWorldData(**kwargs)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.train_dir.is_dir() and dm.val_dir.is_dir() and dm.train_dir != dm.val_dir
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, SIZE, SIZE) and batch["camera"].shape == (2, 25)
    assert batch["mask"].shape == (2, 1, SIZE, SIZE) and batch["latent"].shape == (2, 82)
    assert len(batch["name"]) == 2 and len(dm.train_dataloader()) == 2
    val = next(iter(dm.val_dataloader()))
    assert set(val) == set(batch)
    # Validation heads are other people (sample seed + 1).
    assert not any(torch.equal(a, b) for a in dm.val_set.latents for b in dm.train_set.latents)

    def no_rewrite(*args, **kwargs):
        raise AssertionError("a cached dataset was written again")

    monkeypatch.setattr(datadir, "write_dataset", no_rewrite)
    again = FaceWorldData(**kwargs)
    again.prepare_data()
    again.setup("fit")
    assert again.train_dir == dm.train_dir and again.val_dir == dm.val_dir


def test_eg3d_datamodule_split_and_test(tmp_path):
    root = write_eg3d(tmp_path / "d", n=10)
    (tmp_path / "t").mkdir()
    Image.fromarray(_pixels(0)).save(tmp_path / "t" / "a.png")
    np.save(tmp_path / "t" / "a.npy", np.zeros(25, dtype=np.float32))
    dm = EG3DData(train=root, val_fraction=0.2, test=tmp_path / "t", resolution=SIZE, batch_size=4, num_workers=0)
    dm.setup("fit")
    train, val = dm.train_set.rows, dm.val_set.rows
    assert len(val) == 2 and len(train) == 8 and sorted(train + val) == list(range(10))
    again = EG3DData(train=root, val_fraction=0.2, resolution=SIZE, batch_size=4, num_workers=0)
    again.setup("fit")
    assert again.val_set.rows == val                               # seeded
    assert len(dm.train_dataloader()) == 2 and len(dm.val_dataloader()) == 1   # drop_last only in training
    assert isinstance(dm.test_set, CameraFolder) and next(iter(dm.test_dataloader()))["name"] == ["a.png"]
    both = EG3DData(train=root, val=root, test=root, resolution=SIZE, batch_size=4, num_workers=0)
    both.setup("fit")
    assert len(both.train_set) == len(both.val_set) == 10 and isinstance(both.test_set, EG3DImages)


def _labels(root: Path, labels) -> None:
    (root / "dataset.json").write_text(json.dumps({"labels": labels}))


@pytest.mark.parametrize(("labels", "message"), [
    ("not json", "not a JSON object"),
    ({"labels": None}, 'no "labels" list'),
    ({"labels": [["a.png", [0.0] * 25], ["b.png"]]}, "label 1 is not [image name"),
    ({"labels": [["a.png", [0.0] * 25]] * 3 + [["b.png", [0.0] * 16]]}, "label 3 has 16 numbers, expected 25"),
    ({"labels": [["a.png", [0.0] * 24 + ["x"]]]}, "label 0 has a value that is not a finite number"),
])
def test_bad_labels(tmp_path, labels, message):
    text = labels if isinstance(labels, str) else json.dumps(labels)
    (tmp_path / "dataset.json").write_text(text)
    with pytest.raises(DataFormatError, match="dataset.json") as err:
        EG3DImages(tmp_path)
    assert message in str(err.value) and str(tmp_path) in str(err.value)


def test_missing_root_and_dataset_json(tmp_path):
    with pytest.raises(DataFormatError, match="nowhere does not exist"):
        EG3DImages(tmp_path / "nowhere")
    with pytest.raises(DataFormatError, match="has no dataset.json"):
        EG3DImages(tmp_path)
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as z:
        z.writestr("a/dataset.json", "{}")
        z.writestr("b/x.png", "")
    with pytest.raises(DataFormatError, match="x.zip has no dataset.json"):
        EG3DImages(tmp_path / "x.zip")
    (tmp_path / "bad.zip").write_text("not a zip")
    with pytest.raises(DataFormatError, match="bad.zip is not a zip file"):
        EG3DImages(tmp_path / "bad.zip")


def test_bad_images_are_named_when_read(tmp_path):
    _labels(tmp_path, [[name, [0.0] * 25] for name in ("gone.png", "grey.png", "rgba.png", "wide.png", "junk.png")])
    Image.fromarray(_pixels(0)[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([_pixels(0), _pixels(1)[..., :1]])).save(tmp_path / "rgba.png")
    Image.fromarray(_pixels(0)[:16]).save(tmp_path / "wide.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    data = EG3DImages(tmp_path)                                    # labels are fine: nothing read yet
    for i, message in enumerate(["gone.png is listed in dataset.json but missing", "grey.png is a L image; RGB",
                                 "rgba.png is a RGBA image; RGB is needed", "wide.png is 32x16; square",
                                 "junk.png is not a readable image"]):
        with pytest.raises(DataFormatError, match=message):
            data[i]
    zipped = EG3DImages(zip_folder(tmp_path, tmp_path.parent / "z.zip"))
    with pytest.raises(DataFormatError, match=r"z.zip:gone.png is listed in dataset.json but missing"):
        zipped[0]
    with pytest.raises(DataFormatError, match=r"z.zip:rgba.png is a RGBA image"):
        zipped[2]


def test_camera_folder_errors(tmp_path):
    with pytest.raises(DataFormatError, match="holds no"):
        CameraFolder(tmp_path)
    Image.fromarray(_pixels(0)).save(tmp_path / "a.png")
    with pytest.raises(DataFormatError, match="a.npy is missing"):
        CameraFolder(tmp_path)
    np.save(tmp_path / "a.npy", np.zeros(16, dtype=np.float32))
    with pytest.raises(DataFormatError, match="a.npy holds 16 values"):
        CameraFolder(tmp_path)
    np.save(tmp_path / "a.npy", np.array([{"x": 1}], dtype=object))   # a pickle inside: never loaded
    with pytest.raises(DataFormatError, match="a.npy is not a numeric"):
        CameraFolder(tmp_path)
    with pytest.raises(DataFormatError, match="is not a folder"):
        CameraFolder(tmp_path / "nowhere")


def test_config_instantiates(tmp_path):
    cfg = OmegaConf.merge({"paths": {"cache_dir": str(tmp_path)}},
                          {"data": OmegaConf.load(CONF / "data" / "faceworld_inversion.yaml")})
    dm = instantiate(cfg.data)
    assert isinstance(dm, FaceWorldData) and dm.cache_dir == tmp_path / "faceworld"
    assert (dm.train_heads, dm.val_heads, dm.views, dm.render_resolution, dm.resolution, dm.batch_size) == (
        4000, 64, 4, 128, 256, 8)
    eg3d = OmegaConf.load(CONF / "data" / "eg3d_images.yaml")
    assert OmegaConf.is_missing(eg3d, "train")
    eg3d.train = str(tmp_path)
    assert isinstance(instantiate(eg3d), EG3DData)
