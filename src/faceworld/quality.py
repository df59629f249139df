"""How well a generator shows the face world: the issue's quality bar, measured.

:func:`generator_quality` renders the validation views of :class:`faceworld.views.FaceWorldViews` (fitted heads:
the first training heads; new heads: never trained on; cameras the training never used) with the generator
(deterministic depth samples) and compares them with the world's own renders:

- ``psnr/<split>``: PSNR (dB) of the final image, mean over heads and views;
- ``renders/within_one/<attribute>`` and ``renders/exact/<attribute>`` (per split): how often the attribute
  classifier reads the head's true level from the generator's render (within one level / exactly);
- ``world/...``: the same reading of the world's renders of those views: the classifier's own ceiling.
"""
from __future__ import annotations

import torch
from torch import Tensor
from tqdm import tqdm

from eg3d.generator import TriPlaneGenerator
from faceworld.generator_fit import psnr, render_views
from faceworld.latents import levels_from_latents
from faceworld.views import FaceWorldViews
from faceworld.world import FaceWorld
from texface.captions import ATTRIBUTES


@torch.no_grad()
def generator_quality(generator: TriPlaneGenerator, world: FaceWorld, classifier: torch.nn.Module | None = None, *,
                      heads: int = 32, views: int = 2, batch_size: int = 4, progress: bool = True
                      ) -> tuple[dict[str, float], Tensor]:
    """The figures of the module docstring, and a picture: world renders above generator renders, fitted heads
    then new heads (first view of each), (2, N, 3, R, R) in [-1, 1]."""
    device = next(generator.parameters()).device
    data = FaceWorldViews(world=world, train_heads=heads, views=views, batch_size=batch_size,
                          resolution=generator.img_resolution, raw_resolution=generator.neural_rendering_resolution,
                          field_points=0, val_heads=heads)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    picture = []

    def add(key: str, values: Tensor) -> None:
        sums[key] = sums.get(key, 0.0) + float(values.float().sum())
        counts[key] = counts.get(key, 0) + values.numel()

    loader = data.val_dataloader()
    for batch in tqdm(loader, desc="quality", unit="batch", disable=not progress):
        batch = data.targets(batch["latent"].to(device), batch["cameras"].to(device), batch["index"].to(device))
        out = render_views(generator, batch["latent"], batch["cameras"], deterministic=True)
        target = batch["image"].flatten(0, 1)
        split = ["fitted_heads" if i < heads else "new_heads" for i in batch["index"].tolist()]
        splits = [s for s in split for _ in range(views)]                            # per image (B*V)
        values = psnr(out["image"], target)
        levels = levels_from_latents(batch["latent"])
        truth = torch.stack([levels[a] for a in ATTRIBUTES], -1).to(device).repeat_interleave(views, 0)
        read = {}
        if classifier is not None:
            for source, images in (("renders", out["image"]), ("world", target)):
                read[source] = torch.stack([v for v in classifier.levels(images).values()], -1)  # (B*V, 6)
        for name in set(splits):
            keep = torch.tensor([s == name for s in splits], device=device)
            add(f"psnr/{name}", values[keep])
            for source, predicted in read.items():
                error = (predicted[keep] - truth[keep]).abs()
                for k, a in enumerate(ATTRIBUTES):
                    add(f"{source}/within_one/{a}/{name}", error[:, k] <= 1)
                    add(f"{source}/exact/{a}/{name}", error[:, k] == 0)
                add(f"{source}/within_one/mean/{name}", error <= 1)
        picture.append(torch.stack([target.view(-1, views, *target.shape[1:])[:, 0],
                                    out["image"].view(-1, views, *target.shape[1:])[:, 0]]))
    figures = {key: sums[key] / counts[key] for key in sorted(sums)}
    return figures, torch.cat(picture, dim=1)
