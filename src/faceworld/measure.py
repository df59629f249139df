"""Measure a generator against the face world: ``python -m faceworld.measure [generator.ckpt=DIR] [device=cuda]``.

A thin command over :func:`faceworld.quality.generator_quality` (conf/measure.yaml): writes ``quality.json`` (the
figures) and ``quality.png`` (world renders above the generator's, fitted heads then new heads) into the run folder
and prints the headline figures.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig

from eg3d.checkpoint import generator_from_config
from faceworld.quality import generator_quality
from faceworld.readers import SHIPPED_READERS, load_reader
from faceworld.world import FaceWorld
from texface.atomic import write_text
from texface.cli import hydra_command
from texface.media import save_png, tile, to_uint8
from texface.options import check_int


def measure(cfg: DictConfig) -> dict[str, float]:
    """The quality figures of ``cfg.generator`` (see :mod:`faceworld.quality`), also written to ``cfg.out_dir``."""
    heads, views = check_int("heads", cfg.heads, 1), check_int("views", cfg.views, 1)
    generator = generator_from_config(cfg.generator).to(cfg.device)
    classifier = load_reader(cfg.classifier or SHIPPED_READERS["attribute_classifier"], map_location=cfg.device)
    figures, picture = generator_quality(generator, FaceWorld(cfg.world_seed), classifier, heads=heads, views=views,
                                         batch_size=check_int("batch_size", cfg.batch_size, 1), progress=cfg.progress)
    out = Path(cfg.out_dir)
    write_text(out / "quality.json", json.dumps(figures, indent=2) + "\n")
    save_png(pairs_picture(picture), out / "quality.png")
    for key in ("psnr/fitted_heads", "psnr/new_heads", "renders/within_one/mean/fitted_heads",
                "world/within_one/mean/fitted_heads"):
        print(f"{key}: {figures[key]:.3f}")
    return figures


def pairs_picture(picture, ncols: int = 8):
    """(2, N, 3, R, R) world / generator images -> a uint8 grid: rows of ``ncols`` world images, each above the
    generator's renders of the same views (the last rows padded with black)."""
    n = picture.shape[1]
    padded = torch.cat([picture, -torch.ones(2, -n % ncols, *picture.shape[2:])], 1) if n % ncols else picture
    rows = padded.unflatten(1, (-1, ncols)).transpose(0, 1)          # (rows, 2, ncols, 3, R, R)
    return tile(to_uint8(rows.flatten(0, 2).float().cpu()), ncols=ncols)


main = hydra_command("measure", measure)

if __name__ == "__main__":
    main()
