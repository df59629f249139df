"""faceworld.views + faceworld.generator_fit: targets of the world's views, and a few fitting steps that lower the
loss (tiny sizes on the CPU; the real fit runs on a GPU, docs/FACEWORLD.md)."""
from __future__ import annotations

from functools import partial

import pytest
import torch

from eg3d.checkpoint import load_generator
from eg3d.generator import TriPlaneGenerator
from faceworld.generator_fit import GeneratorFit, psnr
from faceworld.latents import LATENT_DIM
from faceworld.views import FaceWorldViews
from faceworld.world import FaceWorld
from texface.config import compose, instantiate
from texface.errors import ConfigError


def small_generator() -> TriPlaneGenerator:
    """The world generator of conf/model/generator_fit.yaml, narrow and with few samples per ray."""
    node = compose("fit", ["paths.output_dir=/tmp/unused", "model.generator.channel_base=512",
                           "model.generator.channel_max=16", "model.generator.rendering_kwargs.depth_resolution=6",
                           "model.generator.rendering_kwargs.depth_resolution_importance=6"]).model.generator
    torch.manual_seed(0)
    return instantiate(node)


@pytest.fixture(scope="module")
def views():
    return FaceWorldViews(world=FaceWorld(0), train_heads=2, views=2, steps_per_epoch=1, batch_size=2,
                          field_points=256, val_heads=1, cached_views=3)


def test_targets_line_up_with_the_generator(views):
    batch = next(iter(views.val_dataloader()))
    out = views.on_after_batch_transfer(batch, 0)
    assert out["image"].shape == (2, 2, 3, 128, 128) and out["raw"].shape == (2, 2, 3, 64, 64)
    assert out["points"].shape == (2, 256, 3) and out["sigma"].shape == (2, 256, 1)
    assert out["raw"].min() >= -1 and out["raw"].max() <= 1
    assert out["sigma"][:, :128].mean() > out["sigma"][:, 128:].mean()  # points near surfaces hold matter
    # Cached training views are renders of the same heads from the cached cameras.
    cached = views.on_after_batch_transfer(next(iter(views.train_dataloader())), 0)
    assert views.cache["image"].shape == (2, 3, 3, 128, 128)
    again = views.world.render(views.world.heads_from_latents(cached["latent"].cpu()).subset([0]),
                               cached["cameras"][0, :1], 128)["image"]
    assert (again - cached["image"][0, :1]).abs().max() < 1e-2  # float16 storage


def test_a_few_steps_lower_the_loss(views):
    module = GeneratorFit(generator=small_generator(), optimizer=partial(torch.optim.Adam, lr=3e-3))
    batch = views.on_after_batch_transfer(next(iter(views.train_dataloader())), 0)
    optimizer = torch.optim.Adam(module.generator.parameters(), lr=1e-3)  # the fit warms up to 2e-3
    losses = []
    for _ in range(6):
        terms, _ = module.losses(batch)
        loss = sum(terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.8 * losses[0], losses


def test_export_is_a_generator_checkpoint(tmp_path):
    module = GeneratorFit(generator=small_generator(), optimizer=partial(torch.optim.Adam, lr=1e-3))
    module.export(tmp_path / "g", dtype="float16")
    G = load_generator(tmp_path / "g")
    assert G.z_dim == LATENT_DIM and not G.training
    assert torch.allclose(G.backbone.mapping.w_avg, module.generator.backbone.mapping.w_avg.half().float())
    with pytest.raises(ConfigError, match="z_dim must be 82"):
        GeneratorFit(generator=TriPlaneGenerator(**{**small_generator().init_kwargs, "z_dim": 512}),
                     optimizer=torch.optim.Adam)
    with pytest.raises(ConfigError, match="unknown loss terms"):
        GeneratorFit(generator=small_generator(), optimizer=torch.optim.Adam, weights={"perceptual": 1})


def test_psnr_of_known_errors():
    a = torch.zeros(2, 3, 4, 4)
    assert torch.allclose(psnr(a + 0.02, a), torch.full((2,), 10 * torch.log10(torch.tensor(4 / 4e-4))))
