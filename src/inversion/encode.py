"""Images -> style-code dataset: ``python -m inversion.encode ckpt=ENCODER images=DIR [captions=F] [expressions=F]
out=DIR``.

Inverts every image of ``images`` with a Re-PoI encoder (deterministic: eval mode, ``noise_mode=const``, evenly
spaced depth samples) and writes the codes, with each image's captions, expression and camera, as a style-code
dataset (:class:`texface.stylecodes.StyleCodeSet`, data/README.md) that ``python -m scd.train data=stylecodes
data.data_dir=OUT`` trains on.

Inputs (conf/encode.yaml):

- ``images``: an EG3D-format dataset (a folder or .zip with dataset.json) or a folder of ``*.png`` with
  ``<stem>.npy`` cameras (:func:`inversion.data.open_images`). The images are read in "dataset order": the order
  of dataset.json, or the sorted ``*.png`` of a camera folder. Each code's ``id`` is its image name: the path in
  dataset.json (e.g. ``images/00000/img00000000.png``), or the file name in a camera folder.
- ``captions``: a jsonl file, one line ``{"id": <image name>, "captions": [...]}`` (the style-code format's
  captions.jsonl, which a face-world dataset also writes), joined by name. An image without a line gets an empty
  caption list (allowed by the format: it trains with the null text); a line whose id names no image is an error.
  null: a face-world dataset's own captions.jsonl, else no captions at all.
- ``expressions``: 50 FLAME coefficients per image, either a ``.npy`` of shape (N, 50) whose row n belongs to image
  n in dataset order, or a name -> coefficients mapping joined by name: a ``.json`` object
  ``{"<image name>": [50 numbers], ...}`` or a ``.jsonl`` with lines ``{"id": <image name>, "expression": [50
  numbers]}``. Every image needs one (a missing one, or one naming no image, is an error). null: a face-world
  dataset's own expressions.npy, else none: the rows are zero with ``has_exp`` false (text-only training).

Resuming: the images are encoded in shards of ``shard_size``, each written atomically to
``OUT/.shards/shard_00000.safetensors`` (codes and cameras, with the image names and the settings in its metadata).
A rerun with the same command skips the finished shards; a shard written for other images or settings (another
encoder, generator, resolution or shard_size) is refused with an error: use a new ``out`` or ``force=true``. When
every shard is done the dataset replaces ``OUT`` in one rename (texface.atomic) and the shards go with it.
An ``OUT`` that already holds a complete dataset is refused unless ``force=true``; a non-empty ``OUT`` that is
neither a dataset nor an encoding in progress is always refused. The images are not hashed: replacing image files
under the same names between two runs is not detected.

``meta.json`` records the source (``inversion.encode``), the encoder checkpoint and its digest, the images path,
the generator build call, the resolution and where the captions and expressions came from.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from faceworld.datadir import is_dataset, read_index
from inversion.checkpoint import ENCODER_TENSORS, encoder_generator, load_encoder
from inversion.data import CameraFolder, EG3DImages, open_images
from texface.atomic import atomic_directory, atomic_file
from texface.cli import hydra_command
from texface.device import resolve_device
from texface.errors import ConfigError, DataFormatError
from texface.options import check_int
from texface.stylecodes import CAPTIONS_FILE, CODES_FILE, EXP_DIM, StyleCodeSet
from texface.stylecodes import read_captions as read_caption_lines  # the format's own captions.jsonl parser

SHARDS_DIR = ".shards"
SHARD_FORMAT = "texface.inversion.encode.shard"
SHARD_VERSION = 1
_SHARD_NAME = re.compile(r"shard_(\d+)\.safetensors")


def shard_path(out: Path, index: int) -> Path:
    return out / SHARDS_DIR / f"shard_{index:05d}.safetensors"


# ----------------------------------------------------------------------------------------------- inputs

def image_index(images: EG3DImages | CameraFolder) -> tuple[list[str], torch.Tensor]:
    """The image names and cameras (N, 25) of a dataset, in dataset order, without reading any image."""
    if isinstance(images, EG3DImages):
        names, cameras = [images.names[r] for r in images.rows], images.cameras[images.rows]
    else:
        names, cameras = [p.name for p in images.paths], images.cameras
    if not names:
        raise DataFormatError(f"{images.root} lists no images")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataFormatError(f"{images.root}: image {name!r} is listed twice; image names must be unique "
                                  f"(they become the codes' ids)")
        seen.add(name)
    return names, cameras


def _unknown(kind: str, source: Path, unknown: list[str], names: list[str]) -> DataFormatError:
    more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
    return DataFormatError(f"{source}: {kind} id {unknown[0]!r}{more} matches no image of the dataset; ids must be "
                           f"image names as the dataset lists them (e.g. {names[0]!r})")


def join_captions(path, names: list[str]) -> list[list[str]]:
    """The caption list of every image (empty where ``path`` has no line for it), from a captions.jsonl."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"captions file not found: {path}")
    captions, ids = read_caption_lines(path)
    table = dict(zip(ids, captions))
    known = set(names)
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise _unknown("caption", path, unknown, names)
    return [list(table.get(name, [])) for name in names]


def _expression_row(value, where: str) -> list[float]:
    if not (isinstance(value, list) and len(value) == EXP_DIM and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value)):
        raise DataFormatError(f"{where}: the expression must be a list of {EXP_DIM} finite numbers")
    return [float(v) for v in value]


def _read_expression_table(path: Path) -> dict[str, list[float]]:
    """name -> 50 floats from a .json object or a .jsonl of {"id", "expression"} lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path} is not UTF-8 text: {err}") from None
    table: dict[str, list[float]] = {}
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{path} is not valid JSON: {err.msg} (line {err.lineno})") from None
        if not isinstance(obj, dict):
            raise DataFormatError(f"{path} must hold a JSON object {{\"<image name>\": [{EXP_DIM} numbers], ...}}")
        for name, value in obj.items():
            table[name] = _expression_row(value, f"{path}, image {name!r}")
        return table
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{path}, line {number}"
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{where} is not valid JSON: {err.msg} (column {err.colno})") from None
        if not isinstance(obj, dict) or set(obj) != {"id", "expression"} or not isinstance(obj["id"], str):
            raise DataFormatError(f"{where} must be {{\"id\": <image name>, \"expression\": [{EXP_DIM} numbers]}}")
        if obj["id"] in table:
            raise DataFormatError(f"{where}: id {obj['id']!r} already has an expression; ids must be unique")
        table[obj["id"]] = _expression_row(obj["expression"], where)
    return table


def join_expressions(path, names: list[str]) -> torch.Tensor:
    """Expressions (N, 50) float32 of the images: a .npy in dataset order, or a .json / .jsonl joined by name."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"expressions file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise DataFormatError(f"{path} is not a readable .npy array ({err})") from None
        if not isinstance(array, np.ndarray) or not (np.issubdtype(array.dtype, np.floating)
                                                     or np.issubdtype(array.dtype, np.integer)):
            raise DataFormatError(f"{path} must hold one numeric array (N, {EXP_DIM})")
        if array.shape != (len(names), EXP_DIM):
            raise DataFormatError(f"{path} has shape {array.shape}, expected ({len(names)}, {EXP_DIM}): one row per "
                                  f"image in dataset order (or use a .json mapping image name -> expression)")
        bad = ~np.isfinite(array).all(axis=1)
        if bad.any():
            first = int(bad.nonzero()[0][0])
            raise DataFormatError(f"{path}: row {first} (image {names[first]!r}) has NaN/inf values")
        return torch.from_numpy(array.astype(np.float32))
    if suffix not in (".json", ".jsonl"):
        raise ConfigError(f"expressions must be a .npy, .json or .jsonl file, got {path}")
    table = _read_expression_table(path)
    known = set(names)
    unknown = [name for name in table if name not in known]
    if unknown:
        raise _unknown("expression", path, unknown, names)
    missing = [name for name in names if name not in table]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataFormatError(f"{path} has no expression for image {missing[0]!r}{more}; every image needs one")
    return torch.tensor([table[name] for name in names], dtype=torch.float32).reshape(len(names), EXP_DIM)


def resolve_labels(cfg: DictConfig, names: list[str]) -> dict:
    """Captions, expressions (N, 50), has_exp (N,) and where they came from, by the rules of the module docstring."""
    faceworld = Path(cfg.images).is_dir() and is_dataset(cfg.images)
    index = None
    if faceworld and (cfg.captions is None or cfg.expressions is None):
        index = read_index(cfg.images)
        if index.names != names:
            raise DataFormatError(f"{cfg.images}: the face-world index does not list the images of dataset.json")
    if cfg.captions is not None:
        captions, caption_source = join_captions(cfg.captions, names), str(Path(cfg.captions).resolve())
    elif index is not None:
        captions = [list(c) for c in index.captions]
        caption_source = str((Path(cfg.images) / CAPTIONS_FILE).resolve())
    else:
        captions, caption_source = [[] for _ in names], None
    n = len(names)
    if cfg.expressions is not None:
        expressions, exp_source = join_expressions(cfg.expressions, names), str(Path(cfg.expressions).resolve())
        has_exp = torch.ones(n, dtype=torch.bool)
    elif index is not None:
        expressions = index.expressions.float().reshape(n, EXP_DIM)
        exp_source = str((Path(cfg.images) / "expressions.npy").resolve())
        has_exp = torch.ones(n, dtype=torch.bool)
    else:
        expressions, exp_source = torch.zeros(n, EXP_DIM), None
        has_exp = torch.zeros(n, dtype=torch.bool)
    return {"captions": captions, "expressions": expressions, "has_exp": has_exp,
            "caption_source": caption_source, "exp_source": exp_source}


def check_out(out: Path, force: bool) -> None:
    """Refuse an ``out`` this command must not write (module docstring); nothing is changed here."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return
    if (out / SHARDS_DIR).is_dir():
        return  # an encoding in progress (possibly a forced re-encoding next to an old dataset): resume it
    if not (out / CODES_FILE).is_file():
        raise ConfigError(f"out={out} is not empty and is neither a style-code dataset nor an encoding in progress; "
                          f"choose another out")
    if not force:
        raise ConfigError(f"out={out} already holds a style-code dataset; pass force=true to replace it (or choose "
                          f"another out)")


def checkpoint_digest(path) -> str:
    """SHA-256 (16 hex digits) of an encoder checkpoint's config.json and weights: what the shards were made with."""
    digest = hashlib.sha256()
    for name in ("config.json", f"{ENCODER_TENSORS}.safetensors"):
        digest.update(name.encode())
        with open(Path(path) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- shards

def read_shard(path: Path) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(metadata {names, settings}, codes (n, 14, 512), cameras (n, 25)) of a shard file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            codes, cameras = f.get_tensor("codes"), f.get_tensor("cameras")
        info = {"names": json.loads(meta["names"]), "settings": json.loads(meta["settings"])}
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise DataFormatError(f"{path} is not a readable shard ({err}); use a new out dir or force=true to start "
                              f"over") from None
    return info, codes, cameras


def shard_mismatch(path: Path, names: list[str], cameras: torch.Tensor, settings: dict) -> str | None:
    """Why the shard at ``path`` does not hold these images made with these settings; None when it does."""
    info, codes, stored_cameras = read_shard(path)
    if info["settings"] != settings:
        keys = sorted(k for k in set(settings) | set(info["settings"])
                      if settings.get(k) != info["settings"].get(k))
        return f"it was made with other settings ({', '.join(keys)})"
    if info["names"] != names:
        return "it holds other images"
    if tuple(codes.shape) != (len(names), 14, 512) or not torch.equal(stored_cameras, cameras):
        return "its cameras or codes do not fit the images"
    return None


def write_shard(path: Path, codes: torch.Tensor, cameras: torch.Tensor, names: list[str], settings: dict) -> None:
    with atomic_file(path) as tmp:
        save_file({"codes": codes.contiguous(), "cameras": cameras.contiguous()}, str(tmp),
                  metadata={"names": json.dumps(names), "settings": json.dumps(settings, sort_keys=True)})


def check_shards(out: Path, plan: list[range], names: list[str], cameras: torch.Tensor, settings: dict) -> list[bool]:
    """Which shards of ``plan`` are done; raise ConfigError for any shard file that does not belong to this run."""
    folder = out / SHARDS_DIR
    done = [False] * len(plan)
    if not folder.is_dir():
        return done
    for file in sorted(folder.iterdir()):
        if file.name.startswith("."):   # a partial write of an interrupted run
            file.unlink(missing_ok=True)
            continue
        match = _SHARD_NAME.fullmatch(file.name)
        if match is None:
            continue
        k = int(match.group(1))
        why = "this run has fewer shards" if k >= len(plan) else shard_mismatch(
            file, [names[i] for i in plan[k]], cameras[plan[k].start:plan[k].stop], settings)
        if why is not None:
            raise ConfigError(f"{file} does not belong to this encoding: {why}; use a new out dir, or force=true to "
                              f"discard the finished shards and start over")
        done[k] = True
    return done


# ----------------------------------------------------------------------------------------------- encode

def encode_batch(encoder, generator, x: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """The refined codes (B, 14, 512) of images ``x`` seen from ``cam`` (deterministic renders; the refined one is
    not needed)."""
    return encoder.invert(x, cam, generator, deterministic=True)[0]["codes"]


def check_options(cfg: DictConfig) -> dict:
    for key in ("ckpt", "images", "out"):
        if cfg[key] is None:
            raise ConfigError(f"{key}= is required")
    return {"shard_size": check_int("shard_size", cfg.shard_size, 1),
            "batch_size": check_int("batch_size", cfg.batch_size, 1),
            "num_workers": check_int("num_workers", cfg.num_workers, 0), "force": bool(cfg.force),
            "progress": bool(cfg.progress)}


@torch.no_grad()
def encode(cfg: DictConfig) -> dict:
    """Encode ``cfg.images`` into the style-code dataset ``cfg.out`` (conf/encode.yaml, module docstring).

    Returns ``{'out': Path, 'images': N, 'captioned': ..., 'uncaptioned': ..., 'with_expression': ..., 'shards':
    ..., 'reused_shards': ..., 'encoded': images encoded by this call}``. Bad input raises ConfigError,
    DataFormatError or CheckpointError before anything is written.
    """
    opts = check_options(cfg)
    out = Path(cfg.out)
    check_out(out, opts["force"])
    device = resolve_device(cfg.device)
    encoder = load_encoder(cfg.ckpt, map_location=device)
    images = open_images(cfg.images, resolution=encoder.image_resolution)
    names, cameras = image_index(images)
    labels = resolve_labels(cfg, names)
    generator = encoder_generator(cfg.ckpt, cfg.get("generator")).to(device)
    build = generator.build_config
    n, size = len(names), opts["shard_size"]
    settings = {"format": SHARD_FORMAT, "version": SHARD_VERSION, "encoder": checkpoint_digest(cfg.ckpt),
                "generator": build, "resolution": encoder.image_resolution, "shard_size": size,
                "images": str(Path(cfg.images).resolve())}
    plan = [range(start, min(start + size, n)) for start in range(0, n, size)]

    if opts["force"] and (out / SHARDS_DIR).exists():
        shutil.rmtree(out / SHARDS_DIR)
    done = check_shards(out, plan, names, cameras, settings)
    reused = sum(done)
    todo = [k for k in range(len(plan)) if not done[k]]
    print(f"encoding {n} images from {cfg.images} into {out}: {len(plan)} shard(s) of up to {size}, {reused} "
          f"already done", flush=True)
    with tqdm(total=n, initial=sum(len(plan[k]) for k in range(len(plan)) if done[k]), desc="encoding",
              unit="img", disable=not opts["progress"]) as bar:
        for k in todo:
            rows = plan[k]
            loader = DataLoader(Subset(images, list(rows)), batch_size=opts["batch_size"],
                                num_workers=opts["num_workers"])
            codes = []
            for batch in loader:
                x, cam = batch["image"].to(device), batch["camera"].to(device)
                codes.append(encode_batch(encoder, generator, x, cam).float().cpu())
                bar.update(len(x))
            write_shard(shard_path(out, k), torch.cat(codes), cameras[rows.start:rows.stop],
                        [names[i] for i in rows], settings)

    codes = torch.cat([read_shard(shard_path(out, k))[1] for k in range(len(plan))])   # (N, 14, 512)
    captions = labels["captions"]
    meta = {"source": "inversion.encode", "encoder_ckpt": str(Path(cfg.ckpt).resolve()),
            "encoder_digest": settings["encoder"], "images": settings["images"], "generator": build,
            "image_resolution": encoder.image_resolution, "captions_file": labels["caption_source"],
            "expressions_file": labels["exp_source"], "render": {"noise_mode": "const", "deterministic": True}}
    data = StyleCodeSet(codes=codes, expressions=labels["expressions"], captions=captions, ids=list(names),
                        cameras=cameras.float().contiguous(), has_exp=labels["has_exp"], meta=meta)
    with atomic_directory(out) as tmp:   # replaces out (and its shards) in one rename once complete
        data.save(tmp)
    uncaptioned = sum(not c for c in captions)
    with_exp = int(labels["has_exp"].sum())
    print(f"style-code dataset: {out.resolve()} ({n} codes, {n - uncaptioned} captioned, {uncaptioned} without "
          f"captions, {with_exp} with expressions)\n  train on it with: python -m scd.train "
          f"data=stylecodes data.data_dir={out.resolve()}", flush=True)
    return {"out": out, "images": n, "captioned": n - uncaptioned, "uncaptioned": uncaptioned,
            "with_expression": with_exp, "shards": len(plan), "reused_shards": reused,
            "encoded": sum(len(plan[k]) for k in todo)}


main = hydra_command("encode", encode)

if __name__ == "__main__":
    main()
