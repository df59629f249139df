"""Fitting an EG3D TriPlaneGenerator to the face world, without a discriminator.

The generator's latent ``z`` is the head latent of :mod:`faceworld.latents`, so the mapping network learns the
world's generative process: ``G.mapping(z)`` is the style code (W+, every layer the same w) of head ``z``, and a
random seed renders a head. For a batch of heads and ``V`` views each (:class:`faceworld.views.FaceWorldViews`),
the tri-planes of each head are computed once and rendered from its views; the losses compare

- the final image (``image``, the super-resolved output) with the world's render (L1);
- the raw volume render (``image_raw``) and its opacity (``weights_sum``) with the world's colour composited on
  black and its coverage, at the neural-rendering resolution (L1). The rendered depth is not compared: it is
  normalised by the opacity, whose gradient blows up where a ray holds no matter; the field terms below give the
  geometry;
- the tri-plane field itself with the world's field at 3D points near the surfaces and across the box: opacity
  ``1 - exp(-sigma * delta)`` over a step ``delta`` (the marcher's density activation softplus(raw - 1)), and the
  first three feature channels with the world's colour where the world has matter.

:class:`GeneratorFit` is the LightningModule; its ``export`` writes a generator checkpoint
(:func:`eg3d.checkpoint.save_generator`), kept up to date during a run by :class:`texface.training.Export`.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from eg3d.checkpoint import save_generator
from eg3d.generator import TriPlaneGenerator
from faceworld.latents import LATENT_DIM
from texface.errors import ConfigError
from texface.training import log_image, optimizer_config
from texface.media import tile, to_uint8

LOSS_TERMS = ("image", "raw", "mask", "alpha", "colour")


def psnr(actual: Tensor, expected: Tensor) -> Tensor:
    """PSNR (dB) per image of images (..., C, H, W) in [-1, 1] (peak-to-peak 2)."""
    mse = (actual.float() - expected.float()).square().flatten(-3).mean(-1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))


class GeneratorFit(L.LightningModule):
    """Fits ``generator`` to face-world views.

    Args:
        generator: the TriPlaneGenerator to fit; its ``z_dim`` must be LATENT_DIM.
        optimizer: a factory ``optimizer(params) -> Optimizer`` (a ``_partial_`` config).
        scheduler: a factory ``scheduler(optimizer, total_steps=...)`` stepped every step, or None.
        weights: loss weight per term of LOSS_TERMS.
        alpha_step: the step length ``delta`` (world units) at which field densities are compared as opacities.
        tf32: TF32 matrix products and convolutions on CUDA while fitting (restored afterwards).
    """

    def __init__(self, *, generator: TriPlaneGenerator, optimizer: Callable, scheduler: Callable | None = None,
                 weights: dict[str, float] | None = None, alpha_step: float = 0.02, tf32: bool = True):
        super().__init__()
        if generator.z_dim != LATENT_DIM:
            raise ConfigError(f"the world's generator takes head latents: z_dim must be {LATENT_DIM}, got "
                              f"{generator.z_dim}")
        weights = dict(weights or {})
        unknown = set(weights) - set(LOSS_TERMS)
        if unknown:
            raise ConfigError(f"unknown loss terms {sorted(unknown)}; choose from {', '.join(LOSS_TERMS)}")
        self.generator = generator.train().requires_grad_(True)
        self.weights = {term: float(weights.get(term, 1.0)) for term in LOSS_TERMS}
        self.alpha_step = float(alpha_step)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.tf32, self._saved_tf32 = bool(tf32), None

    def on_fit_start(self) -> None:
        self._saved_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.tf32

    def on_fit_end(self) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved_tf32

    def losses(self, batch: dict) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The loss terms of a batch (see the module docstring) and the generator outputs."""
        out = render_views(self.generator, batch["latent"], batch["cameras"])
        planes = out["planes"]
        flat = (lambda x: x.flatten(0, 1))
        mask = flat(batch["raw_mask"])
        terms = {
            "image": F.l1_loss(out["image"], flat(batch["image"])),
            "raw": F.l1_loss(out["image_raw"], flat(batch["raw"])),
            "mask": F.l1_loss(out["weights_sum"], mask),
        }
        if "points" in batch:
            points = batch["points"]
            field = self.generator.renderer.run_model(planes, self.generator.decoder, points,
                                                      torch.zeros_like(points), self.generator.rendering_kwargs)
            sigma = F.softplus(field["sigma"] - 1)  # the marcher's density activation
            alpha, target_alpha = (1 - torch.exp(-s * self.alpha_step) for s in (sigma, batch["sigma"]))
            terms["alpha"] = F.l1_loss(alpha, target_alpha)
            terms["colour"] = ((field["rgb"][..., :3] - batch["rgb"]).abs() * target_alpha).sum() \
                / (3 * target_alpha.sum()).clamp_min(1)
        return terms, out

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        terms, _ = self.losses(batch)
        loss = sum(self.weights[k] * v for k, v in terms.items())
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, on_step=True, on_epoch=False,
                      batch_size=len(batch["latent"]))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["latent"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        terms, out = self.losses(batch)
        values = psnr(out["image"], batch["image"].flatten(0, 1)).view(batch["image"].shape[:2])  # (B, V)
        fitted = batch["index"] < self.trainer.datamodule.val_heads  # the first half are fitted heads
        n = len(batch["latent"])
        if fitted.any():
            self.log("val/psnr_fitted_heads", values[fitted].mean(), on_epoch=True, batch_size=int(fitted.sum()))
        if (~fitted).any():
            self.log("val/psnr_new_heads", values[~fitted].mean(), on_epoch=True, batch_size=int((~fitted).sum()))
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, on_epoch=True, batch_size=n)
        if batch_idx == 0:
            self.log_views(batch, out)

    def log_views(self, batch: dict, out: dict[str, Tensor]) -> None:
        """A grid of targets (top row) and renders (bottom row), to the run folder and the loggers."""
        k = min(8, out["image"].shape[0])
        grid = tile(to_uint8(torch.cat([batch["image"].flatten(0, 1)[:k], out["image"][:k]]).float()), ncols=k)
        log_image(self.trainer, "val/views", grid,
                  Path(self.trainer.default_root_dir) / "views" / f"step_{self.global_step:07d}.png")

    def export(self, path: str | os.PathLike, *, dtype: str = "float32") -> Path:
        """Write the generator (eval-ready, w_avg set to the mean code of random heads) as a checkpoint."""
        if dtype not in ("float32", "float16"):
            raise ConfigError(f"dtype must be float32 or float16, got {dtype!r}")
        set_w_avg(self.generator)
        return save_generator(self.generator, path, dtype=getattr(torch, dtype))

    def configure_optimizers(self) -> dict:
        return optimizer_config(self.generator.parameters(), self.optimizer_factory, self.scheduler_factory,
                                self.trainer)


def head_codes(generator: TriPlaneGenerator, latents: Tensor) -> Tensor:
    """Style codes (B, num_ws, w_dim) of head latents (B, LATENT_DIM)."""
    c = torch.zeros(len(latents), generator.c_dim, device=latents.device)  # the world's mapping ignores it
    return generator.mapping(latents, c)


def render_views(generator: TriPlaneGenerator, latents: Tensor, cameras: Tensor, *,
                 deterministic: bool = False) -> dict[str, Tensor]:
    """Generator outputs for heads (B, K) from their views (B, V, 25), as (B*V, ...); ``planes`` (B, ...) are
    computed once per head."""
    b, v = cameras.shape[:2]
    ws = head_codes(generator, latents)
    planes = generator.planes(ws, noise_mode="const")
    out = generator.render_planes(planes.repeat_interleave(v, 0), ws.repeat_interleave(v, 0),
                                  cameras.reshape(b * v, 25), deterministic=deterministic)
    return {**out, "planes": planes}


@torch.no_grad()
def set_w_avg(generator: TriPlaneGenerator, n: int = 4096, seed: int = 0) -> None:
    """w_avg = the mean code of n random head latents (what truncation pulls towards)."""
    z = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    device = next(generator.parameters()).device
    c = torch.zeros(n, generator.c_dim, device=device)
    generator.backbone.mapping.w_avg.copy_(generator.mapping(z.to(device), c, truncation_psi=1)[:, 0].mean(0))
