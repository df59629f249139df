"""Training the face world's readers (:mod:`faceworld.readers`) on labelled world images.

- :class:`AttributeClassifierFit`: cross-entropy on every attribute's level; validation reports, per attribute and
  on average, the exact accuracy and the accuracy within one level, on heads of other people
  (:class:`faceworld.images.FaceWorldImages`' validation split).
- :class:`IdentityFit`: the symmetric InfoNCE loss between two views (other camera, other expression) of each
  person in a batch; validation reports the similarity of same-person and different-person pairs, verification
  accuracy at the threshold halfway between them, and rank-1 retrieval among the batch.

Their ``export`` writes the reader with the validation figures in its config (``extra``).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from faceworld.readers import AttributeClassifier, IdentityEncoder, save_reader
from texface.captions import ATTRIBUTES
from texface.training import optimizer_config


class ReaderFit(L.LightningModule):
    """What both readers share: the optimizer, the export with the last validation figures."""

    def __init__(self, *, model, optimizer: Callable, scheduler: Callable | None = None):
        super().__init__()
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler

    def configure_optimizers(self) -> dict:
        return optimizer_config(self.model.parameters(), self.optimizer_factory, self.scheduler_factory, self.trainer)

    def export(self, path: str | os.PathLike, *, dtype: str = "float32") -> Path:
        figures = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}
        return save_reader(self.model, path, extra={"validation": figures, "global_step": self.global_step},
                           dtype=getattr(torch, dtype))


class AttributeClassifierFit(ReaderFit):
    """Fits an :class:`~faceworld.readers.AttributeClassifier`."""

    def __init__(self, *, model: AttributeClassifier, optimizer: Callable, scheduler: Callable | None = None):
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler)

    def step(self, batch: dict) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        image = batch["image"].flatten(0, 1)                                      # (B*V, 3, R, R)
        levels = batch["levels"].repeat_interleave(batch["image"].shape[1], 0)     # (B*V, 6)
        logits = self.model(image)
        loss = sum(F.cross_entropy(logits[a], levels[:, k]) for k, a in enumerate(ATTRIBUTES))
        return loss, logits, levels

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, _, levels = self.step(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(levels))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits, levels = self.step(batch)
        n = len(levels)
        exact, within = [], []
        for k, a in enumerate(ATTRIBUTES):
            error = (logits[a].argmax(-1) - levels[:, k]).abs()
            exact.append((error == 0).float().mean())
            within.append((error <= 1).float().mean())
            self.log(f"val/acc/{a}", exact[-1], on_epoch=True, batch_size=n)
            self.log(f"val/acc_within_one/{a}", within[-1], on_epoch=True, batch_size=n)
        self.log("val/loss", loss, on_epoch=True, batch_size=n)
        self.log("val/acc/mean", torch.stack(exact).mean(), prog_bar=True, on_epoch=True, batch_size=n)
        self.log("val/acc_within_one/mean", torch.stack(within).mean(), on_epoch=True, batch_size=n)


class IdentityFit(ReaderFit):
    """Fits an :class:`~faceworld.readers.IdentityEncoder` on pairs of views (the data module's ``views=2``).

    Args:
        temperature: of the InfoNCE logits.
    """

    def __init__(self, *, model: IdentityEncoder, optimizer: Callable, scheduler: Callable | None = None,
                 temperature: float = 0.1):
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler)
        self.temperature = float(temperature)

    def embed_pairs(self, batch: dict) -> tuple[Tensor, Tensor]:
        image = batch["image"]                      # (B, 2, 3, R, R): two views of each person
        b = image.shape[0]
        z = self.model(image[:, :2].flatten(0, 1)).unflatten(0, (b, 2))
        return z[:, 0], z[:, 1]

    def loss(self, a: Tensor, b: Tensor, head: Tensor) -> Tensor:
        logits = a @ b.T / self.temperature
        same = head[:, None] == head[None, :]         # the same person twice in a batch is not a negative
        logits = logits.masked_fill(same & ~torch.eye(len(a), dtype=torch.bool, device=a.device), -1e4)
        target = torch.arange(len(a), device=a.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        a, b = self.embed_pairs(batch)
        loss = self.loss(a, b, batch["head"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(a))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        a, b = self.embed_pairs(batch)
        head = batch["head"]
        similarity = a @ b.T
        same = head[:, None] == head[None, :]
        positive, negative = similarity[same], similarity[~same]
        threshold = (positive.mean() + negative.mean()) / 2
        verification = torch.cat([(positive > threshold).float(), (negative <= threshold).float()]).mean()
        rank1 = same[torch.arange(len(a)), similarity.argmax(1)].float().mean()
        n = len(a)
        self.log("val/loss", self.loss(a, b, head), on_epoch=True, batch_size=n)
        self.log("val/similarity_same", positive.mean(), on_epoch=True, batch_size=n)
        self.log("val/similarity_other", negative.mean(), on_epoch=True, batch_size=n)
        self.log("val/verification_acc", verification, prog_bar=True, on_epoch=True, batch_size=n)
        self.log("val/rank1", rank1, on_epoch=True, batch_size=n)
