"""Face-world datasets on disk: write (atomically), read back, and a cache that makes them on demand.

Layout of a dataset directory (data/README.md, "The face world"), for N = heads x views images, image i showing
head i // views from its view i % views:

```
OUT_DIR/
  dataset.json        {"labels": [["images/00000/img00000000.png", [25 floats]], ...]}  (EG3D dataset_tool)
  images/00000/img00000000.png   RGB uint8, 1000 images per folder
  masks/00000/img00000000.png    grey uint8 coverage (255 = head)
  depth/00000/img00000000.png    grey uint16: depth = 2.25 + value / 65535 * (3.3 - 2.25)
  captions.jsonl      one line per image: {"id": "images/...png", "captions": [...]}
  heads.jsonl         one line per image: image, head, view, head_id, latent, identity, levels, yaw, pitch
  expressions.npy     (N, 50) float32, in dataset.json order
  world.json          format, version, world config, heads, views, resolution, seed: enough to regenerate it
  preview.png         contact sheet of the first view of up to 16 heads
```
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from tqdm import tqdm

from faceworld.render import RAY_END, RAY_START
from faceworld.world import FaceWorld
from texface.atomic import atomic_directory
from texface.captions import ATTRIBUTES
from texface.device import resolve_device
from texface.errors import ConfigError, DataFormatError
from texface.media import save_png, tile, to_uint8
from texface.options import check_int

FORMAT = "faceworld-dataset"
VERSION = 1  # bump when the heads, the renderer or the layout change: cached datasets are then remade
IMAGES_PER_FOLDER = 1000
PREVIEW_HEADS = 16
DEPTH_SCALE = 65535 / (RAY_END - RAY_START)


def image_name(index: int, folder: str = "images") -> str:
    """Relative path of image ``index``: ``images/00000/img00000000.png`` (EG3D's dataset_tool naming)."""
    return f"{folder}/{index // IMAGES_PER_FOLDER:05d}/img{index:08d}.png"


def is_dataset(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a face-world dataset (its world.json says so)."""
    try:
        return json.loads((Path(path) / "world.json").read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _check_target(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a directory")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not is_dataset(out_dir):
        raise ConfigError(f"{out_dir} is not empty and is not a face-world dataset; refusing to write into it")
    if not force:
        raise ConfigError(f"{out_dir} already holds a face-world dataset; pass --force (force=True) to replace it")


def _write_images(root: Path, start: int, out: dict[str, torch.Tensor], pool: ThreadPoolExecutor) -> list:
    rgb = to_uint8(out["image"])
    mask = (out["mask"][:, 0].cpu().numpy() * 255 + 0.5).astype(np.uint8)
    depth = ((out["depth"][:, 0].cpu().double().numpy() - RAY_START) * DEPTH_SCALE).round().clip(0, 65535)
    depth = depth.astype(np.uint16)
    jobs = []
    for k in range(rgb.shape[0]):
        for folder, array in (("images", rgb[k]), ("masks", mask[k]), ("depth", depth[k])):
            path = root / image_name(start + k, folder)
            jobs.append(pool.submit(imageio.imwrite, str(path), array, format="PNG"))
    return jobs


def write_dataset(out_dir: str | os.PathLike, *, heads: int, views: int, resolution: int = 128, seed: int = 0,
                  world: FaceWorld | None = None, device: str | torch.device = "auto", force: bool = False,
                  batch_size: int | None = None, progress: bool = True) -> dict:
    """Render ``heads`` heads from ``views`` cameras each and write the dataset to ``out_dir`` (layout above).

    The directory appears complete or not at all (``texface.atomic.atomic_directory``). An existing non-empty
    ``out_dir`` is refused unless it is a face-world dataset and ``force`` is set. Raises ConfigError for bad
    arguments. Returns a summary dict (path, images, heads, views, resolution, seed, device, seconds).
    """
    check_int("heads", heads, 1)
    check_int("views", views, 1)
    check_int("resolution", resolution, 8)
    check_int("seed", seed, 0)
    out_dir = Path(out_dir)
    _check_target(out_dir, force)
    world = world or FaceWorld()
    device = resolve_device(device)
    if batch_size is None:
        batch_size = max(1, (2 ** 25 if device.type == "cuda" else 2 ** 22) // resolution ** 2)
    check_int("batch_size", batch_size, 1)
    started = time.perf_counter()

    sample = world.sample(heads, seed)
    yaw, pitch = world.sample_poses(heads * views, seed)
    cameras = world.sample_cameras(heads * views, seed)
    head_of_image = torch.arange(heads).repeat_interleave(views)
    n = heads * views
    params = sample.params(device)
    names = [image_name(i) for i in range(n)]
    preview = {}
    with atomic_directory(out_dir) as root:
        for folder in ("images", "masks", "depth"):
            for f in range((n - 1) // IMAGES_PER_FOLDER + 1):
                (root / folder / f"{f:05d}").mkdir(parents=True)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool, \
                tqdm(total=n, desc="faceworld", unit="img", disable=not progress) as bar:
            jobs = []
            for start in range(0, n, batch_size):
                index = head_of_image[start:start + batch_size].to(device)
                out = world.render(params.index(index), cameras[start:start + batch_size], resolution,
                                   device=device)
                jobs += _write_images(root, start, out, pool)
                for k in range(out["image"].shape[0]):
                    if (start + k) % views == 0 and (start + k) // views < PREVIEW_HEADS:
                        preview[(start + k) // views] = to_uint8(out["image"][k:k + 1])[0]
                bar.update(out["image"].shape[0])
            for job in jobs:
                job.result()

        labels = [[names[i], [float(v) for v in cameras[i]]] for i in range(n)]
        (root / "dataset.json").write_text(json.dumps({"labels": labels}), encoding="utf-8")
        with open(root / "captions.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"id": names[i], "captions": sample.captions[int(head_of_image[i])]}) + "\n"
                         for i in range(n))
        with open(root / "heads.jsonl", "w", encoding="utf-8") as f:
            for i in range(n):
                h = int(head_of_image[i])
                f.write(json.dumps({
                    "image": names[i], "head": h, "view": i % views, "head_id": sample.ids[h],
                    "latent": [float(v) for v in sample.latents[h]],
                    "identity": [float(v) for v in sample.identity[h]],
                    "levels": {a: int(sample.levels[a][h]) for a in ATTRIBUTES},
                    "yaw": float(yaw[i]), "pitch": float(pitch[i])}) + "\n")
        np.save(root / "expressions.npy", sample.expressions[head_of_image].numpy().astype(np.float32))
        (root / "world.json").write_text(json.dumps(_description(world, heads, views, resolution, seed, n),
                                                    indent=2), encoding="utf-8")
        save_png(tile(np.stack([preview[h] for h in sorted(preview)]), 4), root / "preview.png")
    return {"path": str(out_dir), "images": n, "heads": heads, "views": views, "resolution": resolution, "seed": seed,
            "device": str(device), "seconds": round(time.perf_counter() - started, 2)}


def _description(world: FaceWorld, heads: int, views: int, resolution: int, seed: int, images: int) -> dict:
    return {"format": FORMAT, "version": VERSION, "world": world.config, "heads": heads, "views": views,
            "resolution": resolution, "seed": seed, "images": images,
            "depth_encoding": {"dtype": "uint16", "near": RAY_START, "far": RAY_END},
            "versions": {"torch": torch.__version__, "numpy": np.__version__}}


@dataclass
class DatasetIndex:
    """What a dataset's small files say, in dataset.json order (images are read with :func:`read_image`)."""
    root: Path
    names: list[str]              # image paths relative to root
    cameras: torch.Tensor         # (N, 25)
    captions: list[list[str]]
    heads: list[dict]             # the heads.jsonl rows
    expressions: torch.Tensor     # (N, 50)
    description: dict             # world.json

    def __len__(self) -> int:
        return len(self.names)


def read_index(path: str | os.PathLike) -> DatasetIndex:
    """Read and cross-check a dataset's dataset.json, captions.jsonl, heads.jsonl, expressions.npy and world.json;
    raises DataFormatError naming the file when they disagree."""
    root = Path(path)
    if not is_dataset(root):
        raise DataFormatError(f"{root} is not a face-world dataset (no world.json with format {FORMAT!r})")
    description = json.loads((root / "world.json").read_text(encoding="utf-8"))
    labels = json.loads((root / "dataset.json").read_text(encoding="utf-8"))["labels"]
    names = [name for name, _ in labels]
    cameras = torch.tensor([label for _, label in labels], dtype=torch.float32).reshape(len(names), 25)
    captions = {}
    for line in (root / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        captions[row["id"]] = row["captions"]
    heads = {}
    for line in (root / "heads.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        heads[row["image"]] = row
    expressions = torch.from_numpy(np.load(root / "expressions.npy"))
    for file, table in (("captions.jsonl", captions), ("heads.jsonl", heads)):
        if set(table) != set(names):
            raise DataFormatError(f"{root / file} does not list exactly the images of dataset.json")
    if expressions.shape != (len(names), 50):
        raise DataFormatError(f"{root / 'expressions.npy'} must be ({len(names)}, 50), got "
                              f"{tuple(expressions.shape)}")
    return DatasetIndex(root=root, names=names, cameras=cameras, captions=[captions[n] for n in names],
                        heads=[heads[n] for n in names], expressions=expressions, description=description)


def read_image(root: str | os.PathLike, name: str, kind: str = "images") -> np.ndarray:
    """Image ``name`` (as in dataset.json) of kind ``images`` (uint8 (R, R, 3)), ``masks`` (float (R, R) in [0, 1])
    or ``depth`` (float (R, R), distance along the ray)."""
    relative = Path(kind) / Path(name).relative_to("images")
    array = imageio.imread(Path(root) / relative)
    if kind == "masks":
        return array.astype(np.float32) / 255
    if kind == "depth":
        return (RAY_START + array.astype(np.float64) / DEPTH_SCALE).astype(np.float32)
    return array


def cache_key(world: FaceWorld, heads: int, views: int, resolution: int, seed: int) -> str:
    """12 hex digits identifying a dataset's content (format version, world config and sizes, not the device)."""
    text = json.dumps({"version": VERSION, "world": world.config, "heads": heads, "views": views,
                       "resolution": resolution, "seed": seed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ensure_dataset(cache_dir: str | os.PathLike, heads: int, views: int, resolution: int = 128, seed: int = 0, *,
                   world: FaceWorld | None = None, device: str | torch.device = "auto",
                   progress: bool = True) -> Path:
    """The path of a dataset with these settings under ``cache_dir``, written first if it is not there yet.

    The folder name carries the sizes and :func:`cache_key`; an existing folder is reused when its world.json
    matches, and remade otherwise (e.g. after a VERSION bump).
    """
    world = world or FaceWorld()
    key = cache_key(world, heads, views, resolution, seed)
    path = Path(cache_dir) / f"faceworld-{heads}x{views}-r{resolution}-s{seed}-{key}"
    wanted = _description(world, heads, views, resolution, seed, heads * views)
    if is_dataset(path):
        found = json.loads((path / "world.json").read_text(encoding="utf-8"))
        if all(found.get(k) == wanted[k] for k in ("version", "world", "heads", "views", "resolution", "seed")):
            return path
    write_dataset(path, heads=heads, views=views, resolution=resolution, seed=seed, world=world, device=device,
                  force=True, progress=progress)
    return path
