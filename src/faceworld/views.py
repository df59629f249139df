"""Views of face-world heads for fitting a generator: head latents + cameras in, rendered targets out.

:class:`FaceWorldViews` is the DataModule. Its items are cheap and deterministic: item i of the training set is
head ``i mod train_heads`` of the world's training heads (their latents) with ``views`` cameras drawn from the
world's spread by a generator seeded with (seed, i), so an epoch, a resumed run and every DataLoader worker see the
same samples. The expensive part, rendering the targets, happens on the training device in
``on_after_batch_transfer``: images, masks and depths of every view (:meth:`faceworld.world.FaceWorld.render`) and
the density and colour of the field at 3D points near the surfaces and across the box
(:func:`faceworld.heads.field`), which supervise the generator's tri-plane field directly.

Validation holds out views: the first ``val_heads`` training heads (fitted heads) and as many new heads (never
trained on), each seen from ``views`` cameras of another seed.
"""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from eg3d.camera import split_labels
from eg3d.renderer import RaySampler
from faceworld.heads import field
from faceworld.render import BACKGROUND
from faceworld.world import FaceWorld
from texface.errors import ConfigError
from texface.options import check_int

TRAIN_HEAD_SEED, NEW_HEAD_SEED = 0, 1   # sample seeds of the training heads and of the never-seen heads
VAL_CAMERA_SEED = 10 ** 6               # camera seeds of validation items start here (training items use 0..)


class HeadViews(Dataset):
    """Item i: {'latent': (LATENT_DIM,) head latent, 'cameras': (views, 25) labels, 'index': i}; with a cache of
    ``cached`` views per head, the item picks ``views`` of them instead ('head', 'slot' (views,)) and its cameras are
    the cached ones."""

    def __init__(self, world: FaceWorld, latents: torch.Tensor, *, length: int, views: int, camera_seed: int,
                 cached: int = 0):
        self.world, self.latents = world, latents
        self.length, self.views, self.camera_seed, self.cached = int(length), int(views), int(camera_seed), cached

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        head = i % len(self.latents)
        if self.cached:
            slot = torch.randperm(self.cached, generator=torch.Generator().manual_seed(i))[: self.views]
            return {"latent": self.latents[head], "index": i, "head": head, "slot": slot}
        return {"latent": self.latents[head], "index": i,
                "cameras": self.world.sample_cameras(self.views, seed=self.camera_seed + i)}


class FaceWorldViews(L.LightningDataModule):
    """Training and validation views of face-world heads, rendered on the training device.

    Args:
        world: the face world.
        train_heads: how many heads (sample seed 0) the generator is fitted to.
        views: cameras per head in a batch item (the generator computes a head's tri-planes once for all).
        steps_per_epoch: training items per epoch = steps_per_epoch * batch_size.
        batch_size: heads per batch.
        resolution: image size of the targets (the generator's output size).
        raw_resolution: size of the raw-render targets (the generator's neural rendering resolution).
        field_points: 3D points per head for the field loss; half lie within ``surface_band`` of a surface
            hit along the views' rays, half uniformly in EG3D's box.
        surface_band: half width (world units) of the band around the surface.
        val_heads: fitted heads and new heads in the validation set (each).
        cached_views: 0 renders the targets of every batch anew; K > 0 renders K views of every training head once
            (on the device, at the first training batch) and draws the batches' views from them: a fixed set of
            views per head, and the fit no longer waits for the renderer.
        num_workers: DataLoader workers (the items are cheap: 0 is fine).
    """

    def __init__(self, *, world: FaceWorld, train_heads: int = 4096, views: int = 2, steps_per_epoch: int = 500,
                 batch_size: int = 16, resolution: int = 128, raw_resolution: int = 64, field_points: int = 4096,
                 surface_band: float = 0.02, val_heads: int = 16, cached_views: int = 0, num_workers: int = 0):
        super().__init__()
        self.world = world
        self.train_heads = check_int("train_heads", train_heads, 1)
        self.views = check_int("views", views, 1)
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.resolution = check_int("resolution", resolution, 8)
        self.raw_resolution = check_int("raw_resolution", raw_resolution, 8)
        self.field_points = check_int("field_points", field_points, 0)
        self.surface_band = float(surface_band)
        self.val_heads = check_int("val_heads", val_heads, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.cached_views = check_int("cached_views", cached_views, 0)
        if self.cached_views and self.cached_views < self.views:
            raise ConfigError(f"cached_views ({cached_views}) must be at least views ({views})")
        self.ray_sampler = RaySampler()
        self.cache: dict[str, torch.Tensor] | None = None

    def train_latents(self) -> torch.Tensor:
        return self.world.latents(self.train_heads, seed=TRAIN_HEAD_SEED)

    def val_latents(self) -> torch.Tensor:
        """The first val_heads fitted heads, then val_heads heads the generator never saw."""
        fitted = self.train_latents()[: self.val_heads]
        return torch.cat([fitted, self.world.latents(self.val_heads, seed=NEW_HEAD_SEED)])

    def train_dataloader(self) -> DataLoader:
        data = HeadViews(self.world, self.train_latents(), length=self.steps_per_epoch * self.batch_size,
                         views=self.views, camera_seed=0, cached=self.cached_views)
        return DataLoader(data, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        latents = self.val_latents()
        data = HeadViews(self.world, latents, length=len(latents), views=self.views, camera_seed=VAL_CAMERA_SEED)
        return DataLoader(data, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

    @torch.no_grad()
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if "slot" in batch:
            return self.cached_targets(batch)
        return self.targets(batch["latent"], batch["cameras"], batch["index"])

    @torch.no_grad()
    def fill_cache(self, device: torch.device) -> None:
        """Render ``cached_views`` views of every training head once, kept on ``device`` (images in float16)."""
        latents = self.train_latents().to(device)
        n, k = len(latents), self.cached_views
        cameras = self.world.sample_cameras(n * k, seed=VAL_CAMERA_SEED - 1).to(device)  # (N*K, 25)
        params = self.world.params(latents)
        outs = []
        for start in range(0, n * k, 4096):
            index = torch.arange(start, min(start + 4096, n * k), device=device) // k
            out = self.world.render(params.index(index), cameras[start:start + 4096], self.resolution,
                                    device=device)
            outs.append({key: value.half() for key, value in out.items()})
        self.cache = {key: torch.cat([o[key] for o in outs]).unflatten(0, (n, k)) for key in outs[0]}
        self.cache["cameras"] = cameras.unflatten(0, (n, k))

    def cached_targets(self, batch: dict) -> dict:
        """The targets of a batch of cached views (see :meth:`targets` for the keys)."""
        latents = batch["latent"]
        if self.cache is None:
            self.fill_cache(latents.device)
        head, slot = batch["head"], batch["slot"]                            # (B,), (B, V)
        pick = {key: value[head[:, None], slot] for key, value in self.cache.items()}
        return self.assemble(latents, pick["cameras"], batch["index"], pick["image"].float(),
                             pick["mask"].float(), pick["depth"].float())

    @torch.no_grad()
    def targets(self, latents: torch.Tensor, cameras: torch.Tensor, index: torch.Tensor) -> dict:
        """The batch with its rendered targets, on the device of ``latents``.

        Returns ``latent`` (B, K), ``cameras`` (B, V, 25), ``image`` (B, V, 3, R, R) in [-1, 1], ``mask`` and
        ``depth`` (B, V, 1, R, R), ``raw`` (B, V, 3, r, r) (the colour composited on black, in [-1, 1], the
        target of the generator's raw render), ``raw_mask`` and ``raw_depth`` (B, V, 1, r, r), ``points``
        (B, P, 3), ``sigma`` (B, P, 1), ``rgb`` (B, P, 3).
        """
        device = latents.device
        b, v = cameras.shape[:2]
        params = self.world.params(latents)
        flat_params = params.index(torch.arange(b, device=device).repeat_interleave(v))
        out = self.world.render(flat_params, cameras.reshape(b * v, 25), self.resolution, device=device)
        image, mask, depth = (out[k].reshape(b, v, *out[k].shape[1:]) for k in ("image", "mask", "depth"))
        return self.assemble(latents, cameras, index, image, mask, depth, params=params)

    def assemble(self, latents: torch.Tensor, cameras: torch.Tensor, index: torch.Tensor, image: torch.Tensor,
                 mask: torch.Tensor, depth: torch.Tensor, *, params=None) -> dict:
        """A training batch from the targets of its views (B, V, ...): raw-render targets and field samples
        (``params``: the heads' parameters when already built)."""
        device, shape = latents.device, cameras.shape[:2]
        factor = self.resolution // self.raw_resolution
        pool = (lambda x: torch.nn.functional.avg_pool2d(x.flatten(0, 1), factor).unflatten(0, shape))
        background = torch.tensor(BACKGROUND, device=device).view(1, 1, 3, 1, 1)
        colour = (image + 1) / 2 - (1 - mask) * background        # premultiplied colour in [0, 1]
        batch = {"latent": latents, "cameras": cameras, "index": index, "image": image, "mask": mask,
                 "depth": depth, "raw": pool(colour) * 2 - 1, "raw_mask": pool(mask), "raw_depth": pool(depth)}
        if self.field_points:
            batch["points"] = self.field_points_of(cameras, depth, mask, index)
            if params is None:
                params = self.world.params(latents)
            sigma, rgb = field(params, batch["points"], beta=self.world.beta)
            batch["sigma"], batch["rgb"] = sigma, rgb
        return batch

    def field_points_of(self, cameras: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor,
                        index: torch.Tensor) -> torch.Tensor:
        """(B, P, 3) points: half near the surface hits of the views' pixels, half uniform in the box."""
        b, v = cameras.shape[:2]
        device, n = cameras.device, self.field_points
        generator = torch.Generator(device=device).manual_seed(int(index[0]) + 7)
        cam2world, intrinsics = split_labels(cameras.reshape(b * v, 25))
        origins, directions = self.ray_sampler(cam2world, intrinsics, self.resolution)   # (B*V, R*R, 3)
        origins, directions = origins.reshape(b, -1, 3), directions.reshape(b, -1, 3)
        hit = (mask.reshape(b, -1) > 0.5).float() + 1e-6                                 # (B, V*R*R)
        near = n // 2
        rays = torch.multinomial(hit, near, replacement=True, generator=generator)        # (B, near)
        t = depth.reshape(b, -1).gather(1, rays)
        t = t + (torch.rand(t.shape, generator=generator, device=device) * 2 - 1) * self.surface_band
        pick = rays[..., None].expand(-1, -1, 3)
        surface = origins.gather(1, pick) + t[..., None] * directions.gather(1, pick)
        box = torch.rand(b, n - near, 3, generator=generator, device=device) - 0.5       # EG3D's box, side 1
        return torch.cat([surface, box], dim=1)

