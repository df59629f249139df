"""Labelled face-world images for the world's readers (attribute classifier, identity network, world CLIP).

:class:`FaceWorldImages` is the DataModule. Item i shows head ``i mod n_heads`` of its split from ``views``
cameras; with ``vary_expression`` every view also gets its own expression code (same identity and attributes), so
that "the same person" means identity and attributes, not one pose of the face. Items are drawn on the CPU from
seeds (deterministic); the images are rendered on the training device in ``on_after_batch_transfer``.

Batches: ``image`` (B, V, 3, R, R) in [-1, 1], ``levels`` (B, 6) long (``texface.captions.ATTRIBUTES`` order),
``head`` (B,) the head's index in its split (its identity label), ``caption`` (B,) one of the head's captions per
item ('' where the head has none), ``latent`` (B, V, LATENT_DIM).

Splits: training heads have sample seed 0, validation heads seed 1 (other people), each with their own cameras.
"""
from __future__ import annotations

import random

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from faceworld.latents import EXPRESSION_SLICE
from faceworld.world import FaceWorld
from texface.captions import ATTRIBUTES
from texface.options import check_int

SPLIT_SEEDS = {"train": 0, "val": 1}


class LabelledViews(Dataset):
    """Item i: views of head ``i mod len(heads)`` with its labels (see the module docstring)."""

    def __init__(self, world: FaceWorld, split: str, *, n_heads: int, length: int, views: int,
                 vary_expression: bool):
        seed = SPLIT_SEEDS[split]
        self.world, self.seed, self.views, self.vary_expression = world, seed, views, vary_expression
        self.heads = world.heads_from_latents(world.latents(n_heads, seed=seed), seed=seed)
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        h = i % len(self.heads)
        latent = self.heads.latents[h].expand(self.views, -1).clone()      # (V, K)
        item_seed = self.seed * 10 ** 9 + i
        if self.vary_expression:
            generator = torch.Generator().manual_seed(item_seed)
            latent[:, EXPRESSION_SLICE] = torch.randn(self.views, EXPRESSION_SLICE.stop - EXPRESSION_SLICE.start,
                                                      generator=generator)
        captions = self.heads.captions[h]
        return {"latent": latent, "cameras": self.world.sample_cameras(self.views, seed=item_seed), "index": i,
                "levels": torch.stack([self.heads.levels[a][h] for a in ATTRIBUTES]), "head": h,
                "caption": random.Random(item_seed).choice(captions) if captions else ""}


class FaceWorldImages(L.LightningDataModule):
    """Labelled views of face-world heads, rendered on the training device.

    Args:
        world: the face world.
        train_heads, val_heads: people in the training and the validation split.
        views: views per item (2 for the identity network's positive pairs, 1 otherwise).
        vary_expression: a new expression per view.
        resolution: image size.
        batch_size: items per batch; steps_per_epoch: training batches per epoch.
        val_items: validation items.
        num_workers: DataLoader workers.
        cache_renders: keep every rendered item (on the training device, float16) and reuse it in later epochs:
            an item is the same in every epoch, so only the first epoch renders (for CPU training, where the
            renderer is the bottleneck).
    """

    def __init__(self, *, world: FaceWorld, train_heads: int = 20000, val_heads: int = 500, views: int = 1,
                 vary_expression: bool = True, resolution: int = 64, batch_size: int = 128,
                 steps_per_epoch: int = 200, val_items: int = 1000, num_workers: int = 0,
                 cache_renders: bool = False):
        super().__init__()
        self.world = world
        self.train_heads, self.val_heads = check_int("train_heads", train_heads, 1), check_int("val_heads", val_heads, 1)
        self.views = check_int("views", views, 1)
        self.vary_expression = bool(vary_expression)
        self.resolution = check_int("resolution", resolution, 8)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, 1)
        self.val_items = check_int("val_items", val_items, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.cache_renders = bool(cache_renders)
        self.renders: dict[tuple[bool, int], torch.Tensor] = {}   # (training, item index) -> (V, 3, R, R)

    def dataset(self, split: str) -> LabelledViews:
        n_heads = self.train_heads if split == "train" else self.val_heads
        length = self.steps_per_epoch * self.batch_size if split == "train" else self.val_items
        return LabelledViews(self.world, split, n_heads=n_heads, length=length, views=self.views,
                             vary_expression=self.vary_expression)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("train"), batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("val"), batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers)

    @torch.no_grad()
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        keys = [(self.trainer is None or self.trainer.training, int(i)) for i in batch["index"]]
        if self.cache_renders and all(key in self.renders for key in keys):
            return {**batch, "image": torch.stack([self.renders[key] for key in keys]).float()}
        image = self.render(batch["latent"], batch["cameras"])
        if self.cache_renders:
            self.renders.update(zip(keys, image.half()))
        return {**batch, "image": image}

    def render(self, latent: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
        """Images (B, V, 3, R, R) of head latents (B, V, K) from cameras (B, V, 25)."""
        b, v = latent.shape[:2]
        params = self.world.params(latent.flatten(0, 1))
        image = self.world.render(params, cameras.flatten(0, 1), self.resolution, device=latent.device)["image"]
        return image.unflatten(0, (b, v))
