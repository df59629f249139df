"""The world CLIP: a small CLIP (Hugging Face ``CLIPModel`` layout) trained contrastively on face-world images and
their captions.

Its folder (``save_pretrained``: config.json + model.safetensors) is what every CLIP option of the project takes:
the SCD's frozen text tower (``scd.text.TextEncoder.from_pretrained``, the token states of its text transformer)
and the image + text towers of CLIP scores in the world. Tokens come from OpenAI's BPE
(:mod:`texface.tokenizer`), so captions are tokenized exactly as for the real CLIP ViT-B/32.

:func:`world_clip` builds the model; :class:`WorldCLIPFit` trains it with the symmetric InfoNCE loss of CLIP on
batches of (image, caption) pairs of :class:`faceworld.images.FaceWorldImages` (uncaptioned items are left out) and
reports held-out image -> caption retrieval accuracy.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

from texface.atomic import atomic_directory
from texface.tokenizer import CONTEXT_LENGTH, EOT_TOKEN, SOT_TOKEN, default_tokenizer
from texface.training import optimizer_config


SHIPPED_CLIP = Path(__file__).resolve().parent / "assets" / "world_clip"   # with its MODEL_CARD.md


def shipped_clip_dir() -> Path:
    """The world CLIP shipped in the package (a ``save_pretrained`` folder), for configs:
    ``path: {_target_: faceworld.clip.shipped_clip_dir}``."""
    return SHIPPED_CLIP


def world_clip(*, text_width: int = 64, text_layers: int = 2, text_heads: int = 4, image_size: int = 64,
               patch_size: int = 8, vision_width: int = 128, vision_layers: int = 4, vision_heads: int = 4,
               projection_dim: int = 64, seed: int = 0) -> CLIPModel:
    """A small CLIPModel with seeded random weights (the global RNG is left untouched)."""
    text = CLIPTextConfig(vocab_size=49408, hidden_size=text_width, intermediate_size=4 * text_width,
                          num_hidden_layers=text_layers, num_attention_heads=text_heads,
                          max_position_embeddings=CONTEXT_LENGTH, hidden_act="quick_gelu", bos_token_id=SOT_TOKEN,
                          eos_token_id=EOT_TOKEN, pad_token_id=0)
    vision = CLIPVisionConfig(image_size=image_size, patch_size=patch_size, hidden_size=vision_width,
                              intermediate_size=4 * vision_width, num_hidden_layers=vision_layers,
                              num_attention_heads=vision_heads, hidden_act="quick_gelu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                    projection_dim=projection_dim))


def clip_pixels(image: Tensor, size: int) -> Tensor:
    """Images (B, 3, H, W) in [-1, 1] as the world CLIP's pixel values (B, 3, size, size): area-resized, kept in
    [-1, 1] (the world CLIP is trained on that range; it has no ImageNet normalisation)."""
    return image if image.shape[-1] == size else F.adaptive_avg_pool2d(image, size)


class WorldCLIPFit(L.LightningModule):
    """Trains a CLIPModel on (image, caption) pairs of the face world.

    Args:
        model: the CLIPModel (e.g. :func:`world_clip`).
        optimizer: a factory ``optimizer(params) -> Optimizer``; scheduler: ``scheduler(optimizer, total_steps=)``
            or None.
    """

    def __init__(self, *, model: CLIPModel, optimizer: Callable, scheduler: Callable | None = None):
        super().__init__()
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.tokenizer = default_tokenizer()
        self.image_size = model.config.vision_config.image_size

    def embed(self, image: Tensor, captions: list[str]) -> tuple[Tensor, Tensor]:
        """Unit image and text embeddings (B, D) of images (B, 3, H, W) and captions."""
        ids = self.tokenizer(captions).to(image.device)
        out = self.model(input_ids=ids, pixel_values=clip_pixels(image, self.image_size))
        return out.image_embeds, out.text_embeds

    def pairs(self, batch: dict) -> tuple[Tensor, list[str]]:
        """The captioned items of a batch: images (N, 3, R, R) (first view) and their captions."""
        keep = [i for i, caption in enumerate(batch["caption"]) if caption]
        return batch["image"][keep, 0], [batch["caption"][i] for i in keep]

    def loss(self, image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
        logits = self.model.logit_scale.exp().clamp(max=100) * image_embeds @ text_embeds.T
        target = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        images, captions = self.pairs(batch)
        loss = self.loss(*self.embed(images, captions))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(captions))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        images, captions = self.pairs(batch)
        image_embeds, text_embeds = self.embed(images, captions)
        similarity = image_embeds @ text_embeds.T
        # A retrieval counts when the chosen caption is the image's own or an identical string.
        chosen = similarity.argmax(1).tolist()
        hits = sum(captions[j] == captions[i] for i, j in enumerate(chosen))
        n = len(captions)
        self.log("val/loss", self.loss(image_embeds, text_embeds), on_epoch=True, batch_size=n)
        self.log("val/retrieval_top1", hits / n, on_epoch=True, batch_size=n)
        self.log("val/retrieval_chance", 1 / n, on_epoch=True, batch_size=n)

    def export(self, path: str | os.PathLike, *, dtype: str = "float32") -> Path:
        """``save_pretrained`` into ``path`` (atomically), weights in ``dtype``."""
        model = self.model if dtype == "float32" else CLIPModel(self.model.config).to(getattr(torch, dtype))
        if model is not self.model:
            model.load_state_dict(self.model.state_dict())
        with atomic_directory(path) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
        return Path(path)

    def configure_optimizers(self) -> dict:
        return optimizer_config(self.model.parameters(), self.optimizer_factory, self.scheduler_factory, self.trainer)
