"""Images with EG3D camera labels for the Re-PoI encoder: datasets and Lightning DataModules.

Sources:

- :class:`EG3DImages`: an EG3D-format dataset, a folder or a ``.zip`` holding images and ``dataset.json`` =
  ``{"labels": [["relative/path.png", [25 floats]], ...]}`` (the row-major 4x4 cam2world, then the row-major 3x3
  intrinsics normalised by the image size). A face-world dataset folder (:mod:`faceworld.datadir`) is one too and
  adds each image's coverage mask and head latent.
- :class:`CameraFolder`: the official test layout: ``*.png`` images, each with a ``<stem>.npy`` of 25 float32.

Transform (the official ``EncodeTransforms``: ``Resize(256) -> ToTensor -> Normalize(0.5, 0.5)``): a square RGB
uint8 image is resized with PIL's bilinear filter (what torchvision's Resize does to a PIL image; skipped at the
native size) and mapped to ``x / 127.5 - 1`` in [-1, 1].

Items are dicts: ``image`` (3, R, R) float32, ``camera`` (25,) float32, ``name`` (str: the path relative to the
dataset), plus for face-world datasets ``mask`` (1, R, R) float32 in [0, 1] and ``latent`` (K,) float32 (heads.jsonl
"latent"). A dataset gives the extra keys for all its items or none, so default collation stacks them: batches are
``image`` (B, 3, R, R), ``camera`` (B, 25), ``name`` list of B str, [``mask`` (B, 1, R, R), ``latent`` (B, K)].
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from faceworld.datadir import ensure_dataset, is_dataset, read_image, read_index
from faceworld.world import FaceWorld
from texface.errors import ConfigError, DataFormatError
from texface.options import check_int, check_number

CAMERA_DIM = 25


def load_image(file, where: str, resolution: int) -> torch.Tensor:
    """The image in ``file`` (a path or a binary file object) as (3, R, R) float32 in [-1, 1], R = ``resolution``.

    Raises DataFormatError naming ``where`` unless it is a square RGB image (grey and RGBA are refused, not
    converted: a silently dropped alpha channel or a grey face would train the encoder on the wrong input).
    """
    try:
        with Image.open(file) as image:
            if image.mode != "RGB":
                raise DataFormatError(f"{where} is a {image.mode} image; RGB is needed")
            if image.width != image.height:
                raise DataFormatError(f"{where} is {image.width}x{image.height}; square images are needed")
            if image.width != resolution:
                image = image.resize((resolution, resolution), Image.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)                           # (R, R, 3)
    except (UnidentifiedImageError, OSError) as err:
        raise DataFormatError(f"{where} is not a readable image ({err})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 127.5 - 1


def parse_labels(data: bytes, where: str) -> tuple[list[str], torch.Tensor]:
    """Image names and cameras (N, 25) of a dataset.json's bytes; DataFormatError naming ``where`` and the entry."""
    try:
        labels = json.loads(data).get("labels")
    except (ValueError, AttributeError):
        raise DataFormatError(f"{where} is not a JSON object") from None
    if not isinstance(labels, list):
        raise DataFormatError(f'{where} has no "labels" list')
    names, cameras = [], []
    for i, entry in enumerate(labels):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                and isinstance(entry[1], list)):
            raise DataFormatError(f"{where}: label {i} is not [image name, [{CAMERA_DIM} numbers]]")
        name, camera = entry
        if len(camera) != CAMERA_DIM:
            raise DataFormatError(f"{where}: label {i} has {len(camera)} numbers, expected {CAMERA_DIM}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in camera):
            raise DataFormatError(f"{where}: label {i} has a value that is not a finite number")
        names.append(name)
        cameras.append(camera)
    return names, torch.tensor(cameras, dtype=torch.float32).reshape(len(names), CAMERA_DIM)


def _subset(n: int, indices: Sequence[int] | None, limit: int | None) -> list[int]:
    """Rows ``indices`` (default all ``n``), the first ``limit`` of them when set."""
    rows = list(range(n)) if indices is None else [int(i) for i in indices]
    if any(not 0 <= i < n for i in rows):
        raise ConfigError(f"indices must lie in [0, {n}), got a value outside")
    return rows if limit is None else rows[:check_int("limit", limit, 0)]


class EG3DImages(Dataset):
    """An EG3D-format dataset (module docstring); labels are checked here, each image when it is read.

    Args:
        root: a folder or a ``.zip`` with ``dataset.json`` at its top, or inside the zip's single top folder (as
            EG3D's dataset_tool writes). A face-world folder (``faceworld.datadir.is_dataset``) adds ``mask`` and
            ``latent``; a zip gives ``image``, ``camera`` and ``name`` only.
        resolution: side R of the images returned (bilinear resize); masks are resized with area averaging (mean
            coverage when shrinking, pixel repetition when growing by an integer factor).
        indices: rows of dataset.json to use, in this order (a train/val split); default all.
        limit: keep only the first ``limit`` of those rows.
    """

    def __init__(self, root: str | os.PathLike, *, resolution: int = 256, indices: Sequence[int] | None = None,
                 limit: int | None = None):
        self.root = Path(root)
        self.resolution = check_int("resolution", resolution, 1)
        self.is_zip = self.root.suffix.lower() == ".zip"
        self._zip: zipfile.ZipFile | None = None   # opened lazily, once per process (see _archive)
        self._zip_pid: int | None = None
        if not self.root.exists():
            raise DataFormatError(f"{self.root} does not exist (an EG3D dataset folder or .zip is needed)")
        if self.is_zip:
            members = set(self._archive().namelist())
            tops = {m.split("/", 1)[0] for m in members}
            # Member names are "<prefix><name in dataset.json>"; prefix "" or the zip's single top folder.
            self.prefix = f"{next(iter(tops))}/" if "dataset.json" not in members and len(tops) == 1 else ""
            if f"{self.prefix}dataset.json" not in members:
                raise DataFormatError(f"{self.root} has no dataset.json at its top or in its single top folder")
            data = self._archive().read(f"{self.prefix}dataset.json")
            where = f"{self.root}:{self.prefix}dataset.json"
        else:
            if not (self.root / "dataset.json").is_file():
                raise DataFormatError(f"{self.root} has no dataset.json")
            data = (self.root / "dataset.json").read_bytes()
            where = str(self.root / "dataset.json")
        self.names, self.cameras = parse_labels(data, where)              # cameras (N, 25)
        self.rows = _subset(len(self.names), indices, limit)
        # Face-world extras: read_index cross-checks heads.jsonl (and the other side files) against dataset.json.
        self.latents: torch.Tensor | None = None
        self.has_masks = False
        if not self.is_zip and is_dataset(self.root):
            index = read_index(self.root)
            self.latents = torch.tensor([row["latent"] for row in index.heads], dtype=torch.float32)  # (N, K)
            self.has_masks = (self.root / "masks").is_dir()

    def _archive(self) -> zipfile.ZipFile:
        # A forked DataLoader worker inherits the parent's handle, whose file offset all processes would share:
        # each process opens its own.
        if self._zip is None or self._zip_pid != os.getpid():
            try:
                self._zip, self._zip_pid = zipfile.ZipFile(self.root), os.getpid()
            except zipfile.BadZipFile:
                raise DataFormatError(f"{self.root} is not a zip file") from None
        return self._zip

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None}   # a ZipFile handle cannot be pickled into spawned workers

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        name = self.names[row]
        if self.is_zip:
            where = f"{self.root}:{self.prefix}{name}"
            try:
                file = self._archive().open(f"{self.prefix}{name}")
            except KeyError:
                raise DataFormatError(f"{where} is listed in dataset.json but missing") from None
            with file:
                image = load_image(file, where, self.resolution)
        else:
            path = self.root / name
            if not path.is_file():
                raise DataFormatError(f"{path} is listed in dataset.json but missing")
            image = load_image(path, str(path), self.resolution)
        item = {"image": image, "camera": self.cameras[row], "name": name}
        if self.has_masks:
            mask = torch.from_numpy(read_image(self.root, name, "masks"))[None, None]        # (1, 1, r, r)
            item["mask"] = F.interpolate(mask, size=(self.resolution,) * 2, mode="area")[0]   # (1, R, R)
        if self.latents is not None:
            item["latent"] = self.latents[row]
        return item


def load_camera(path: Path) -> torch.Tensor:
    """The EG3D camera (25,) float32 stored in the ``.npy`` at ``path`` (loaded without pickles)."""
    if not path.is_file():
        raise DataFormatError(f"{path} is missing (an EG3D camera: {CAMERA_DIM} numbers)")
    try:
        camera = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataFormatError(f"{path} is not a numeric .npy array ({err})") from None
    if not isinstance(camera, np.ndarray) or camera.size != CAMERA_DIM or not np.issubdtype(camera.dtype, np.number):
        what = f"{camera.size} values of {camera.dtype}" if isinstance(camera, np.ndarray) else "an .npz archive"
        raise DataFormatError(f"{path} holds {what}, expected {CAMERA_DIM} numbers (an EG3D camera)")
    if not np.isfinite(camera).all():
        raise DataFormatError(f"{path} contains NaN or inf")
    return torch.from_numpy(camera.reshape(CAMERA_DIM).astype(np.float32))


class CameraFolder(Dataset):
    """The official test layout: the sorted ``*.png`` of ``root``, each with ``<stem>.npy`` holding 25 numbers.

    Args:
        root: the folder (e.g. HFGI3D's CelebA-HQ test split).
        resolution: side R of the images returned (bilinear resize).
        limit: keep only the first ``limit`` images.
    Items: ``image`` (3, R, R), ``camera`` (25,), ``name`` (the file name). Cameras are loaded here, images when read.
    """

    def __init__(self, root: str | os.PathLike, *, resolution: int = 256, limit: int | None = None):
        self.root = Path(root)
        self.resolution = check_int("resolution", resolution, 1)
        if not self.root.is_dir():
            raise DataFormatError(f"{self.root} is not a folder of *.png images with *.npy cameras")
        self.paths = sorted(self.root.glob("*.png"))
        if not self.paths:
            raise DataFormatError(f"{self.root} holds no *.png images")
        self.paths = [self.paths[i] for i in _subset(len(self.paths), None, limit)]
        cameras = [load_camera(path.with_suffix(".npy")) for path in self.paths]
        self.cameras = torch.stack(cameras)                                  # (N, 25)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        path = self.paths[i]
        return {"image": load_image(path, str(path), self.resolution), "camera": self.cameras[i], "name": path.name}


def open_images(path: str | os.PathLike, *, resolution: int = 256) -> EG3DImages | CameraFolder:
    """An EG3D dataset (a zip, or a folder with dataset.json) or else the official test layout (CameraFolder)."""
    path = Path(path)
    if path.suffix.lower() == ".zip" or (path / "dataset.json").is_file():
        return EG3DImages(path, resolution=resolution)
    return CameraFolder(path, resolution=resolution)


class _ImageData(L.LightningDataModule):
    """The loaders shared by both DataModules: ``self.train_set``/``val_set``/``test_set`` are filled by setup."""

    def __init__(self, batch_size: int, num_workers: int, seed: int):
        super().__init__()
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.seed = check_int("seed", seed, 0)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, **kwargs)

    def train_dataloader(self) -> DataLoader:
        if len(self.train_set) < self.batch_size:   # drop_last would leave an epoch without a batch
            raise ConfigError(f"the training split has {len(self.train_set)} images, fewer than batch_size "
                              f"{self.batch_size}")
        return self._loader(self.train_set, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise ConfigError("no test set: set data.test to an EG3D dataset or a folder of *.png + *.npy")
        return self._loader(self.test_set, shuffle=False)


class EG3DData(_ImageData):
    """Real images in EG3D format (e.g. FFHQ crops from EG3D's preprocessing) for the encoder.

    Args:
        train: the training dataset, a folder or .zip in EG3D format (:class:`EG3DImages`).
        val: the validation dataset (same format), or None to hold out ``val_fraction`` of ``train`` (at least
            one image, and one left for training) by a permutation seeded with ``seed``.
        val_fraction: see ``val``.
        test: optional test set: an EG3D dataset, or a folder of ``*.png`` + ``*.npy`` (:class:`CameraFolder`),
            told apart by dataset.json.
        resolution: encoder input size R.
        batch_size: images per batch; num_workers: DataLoader workers.
        seed: seeds the held-out split and the training shuffle.
    """

    def __init__(self, *, train: str | os.PathLike, val: str | os.PathLike | None = None,
                 val_fraction: float = 0.02, test: str | os.PathLike | None = None, resolution: int = 256,
                 batch_size: int = 8, num_workers: int = 2, seed: int = 0):
        super().__init__(batch_size, num_workers, seed)
        self.train, self.val, self.test = train, val, test
        self.val_fraction = check_number("val_fraction", val_fraction, minimum=0, maximum=1)
        self.resolution = check_int("resolution", resolution, 1)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.val is not None:
            self.train_set = EG3DImages(self.train, resolution=self.resolution)
            self.val_set = EG3DImages(self.val, resolution=self.resolution)
        else:
            n = len(EG3DImages(self.train, resolution=self.resolution))
            if n < 2:
                raise ConfigError(f"{self.train} holds {n} image(s); a held-out validation split needs at least 2")
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
            n_val = min(n - 1, max(1, round(self.val_fraction * n)))
            self.train_set = EG3DImages(self.train, resolution=self.resolution, indices=order[n_val:])
            self.val_set = EG3DImages(self.train, resolution=self.resolution, indices=order[:n_val])
        if self.test is not None:
            self.test_set = open_images(self.test, resolution=self.resolution)


class FaceWorldData(_ImageData):
    """Face-world renders with masks and head latents (the project's default data for the encoder).

    The datasets are written once into ``cache_dir`` (``faceworld.datadir.ensure_dataset``) and reused by every
    later run with the same settings.

    Args:
        cache_dir: folder of the cached datasets.
        world: the face world (default ``FaceWorld()``).
        train_heads, val_heads: people in the training and the validation split; the validation heads are drawn
            with sample seed ``seed + 1``, so they are other people than the training heads (seed ``seed``).
        views: cameras per head.
        render_resolution: size the world is rendered (and stored) at.
        resolution: encoder input size R (the renders are resized to it).
        seed: the training dataset's sample seed; it also seeds the training shuffle.
        batch_size: images per batch; num_workers: DataLoader workers.
        device: device that renders the world when a dataset must be written ("auto": CUDA when present).
        progress: show a progress bar while a dataset is written.
    """

    def __init__(self, *, cache_dir: str | os.PathLike, world: FaceWorld | None = None, train_heads: int = 4000,
                 val_heads: int = 64, views: int = 4, render_resolution: int = 128, resolution: int = 256,
                 seed: int = 0, batch_size: int = 8, num_workers: int = 2, device: str = "auto",
                 progress: bool = True):
        super().__init__(batch_size, num_workers, seed)
        self.cache_dir = Path(cache_dir)
        self.world = world or FaceWorld()
        self.train_heads = check_int("train_heads", train_heads, 1)
        self.val_heads = check_int("val_heads", val_heads, 1)
        self.views = check_int("views", views, 1)
        self.render_resolution = check_int("render_resolution", render_resolution, 8)
        self.resolution = check_int("resolution", resolution, 1)
        self.device, self.progress = device, bool(progress)
        self.train_dir: Path | None = None
        self.val_dir: Path | None = None

    def _ensure(self, heads: int, seed: int, progress: bool) -> Path:
        return ensure_dataset(self.cache_dir, heads, self.views, self.render_resolution, seed, world=self.world,
                              device=self.device, progress=progress)

    def prepare_data(self) -> None:
        # Lightning calls this on one process per node, before setup: the only place that writes.
        self._ensure(self.train_heads, self.seed, self.progress)
        self._ensure(self.val_heads, self.seed + 1, self.progress)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        # After prepare_data these find the cached datasets and only return their paths.
        self.train_dir = self._ensure(self.train_heads, self.seed, self.progress)
        self.val_dir = self._ensure(self.val_heads, self.seed + 1, self.progress)
        self.train_set = EG3DImages(self.train_dir, resolution=self.resolution)
        self.val_set = EG3DImages(self.val_dir, resolution=self.resolution)
