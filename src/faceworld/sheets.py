"""Pictures of the world: a contact sheet of sampled heads and an attribute sweep of one identity."""
from __future__ import annotations

import numpy as np
import torch

from faceworld.cameras import labels_at
from faceworld.expression import EXPRESSION_DIM
from faceworld.params import identity_from_seeds, make_params
from faceworld.render import BACKGROUND, render
from faceworld.world import FaceWorld
from texface.captions import ATTRIBUTES, NUM_LEVELS
from texface.media import tile, to_uint8

# The look every sweep starts from; each row changes one attribute.
SWEEP_BASE = {"gender": 0, "smiling": 0, "bangs": 0, "eyeglasses": 0, "beard": 0, "age": 1}


def contact_sheet(world: FaceWorld, n: int = 16, *, seed: int = 0, resolution: int = 128, ncols: int = 4,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """uint8 (rows*R, ncols*R, 3) grid of the first ``n`` heads of ``world.sample(n, seed)``, each from its
    sampled camera."""
    heads = world.sample(n, seed)
    images = world.render(heads, world.sample_cameras(n, seed), resolution, device=device)["image"]
    return tile(to_uint8(images), ncols)


def attribute_sweep(*, identity_seed: int = 3, resolution: int = 128, yaws=(0.0, -0.4, 0.4),
                    device: str | torch.device = "cpu") -> np.ndarray:
    """uint8 grid: for each attribute (rows in ``ATTRIBUTES`` order) and each yaw, its levels 0..max left to right
    on one identity with a neutral expression (``SWEEP_BASE`` otherwise; the beard row is a man). Cells past an
    attribute's last level are background."""
    columns = max(NUM_LEVELS.values())
    rows = []
    for attr in ATTRIBUTES:
        for level in range(NUM_LEVELS[attr]):
            rows.append({**SWEEP_BASE, "gender": 1 if attr == "beard" else SWEEP_BASE["gender"], attr: level})
    n = len(rows)
    levels = {a: torch.tensor([r[a] for r in rows]) for a in ATTRIBUTES}
    params = make_params(levels, identity_from_seeds([identity_seed] * n), torch.zeros(n, EXPRESSION_DIM))
    params = params.to(device)
    blank = np.empty((resolution, resolution, 3), np.uint8)
    blank[:] = np.round(np.array(BACKGROUND) * 255).astype(np.uint8)
    cells = [to_uint8(render(params, labels_at(torch.full((n,), yaw), torch.zeros(n)), resolution)["image"])
             for yaw in yaws]
    grid, start = [], 0
    for attr in ATTRIBUTES:
        count = NUM_LEVELS[attr]
        for images in cells:
            row = list(images[start:start + count]) + [blank] * (columns - count)
            grid.extend(row)
        start += count
    return tile(np.stack(grid), columns)
