"""The face world's readers: networks that read attributes and identities from images of heads.

- :class:`AttributeClassifier`: image (B, 3, R, R) in [-1, 1] -> logits per attribute (gender: 2 levels, the
  others 6), the judge of "does the render show what the caption says" (attribute accuracy of renders);
- :class:`IdentityEncoder`: image -> a unit embedding; two views of one person (identity and attributes, any
  expression and camera) are close, two people far apart: the world's stand-in for ArcFace (identity similarity,
  multi-view identity consistency).

Both are a small convolutional encoder (:class:`ConvEncoder`) with a head, configured by plain keyword arguments,
and saved as texface checkpoint directories (:func:`save_reader`, :func:`load_reader`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from texface.captions import ATTRIBUTES, NUM_LEVELS
from texface.checkpoint import load_state_strict, read_config, read_tensors, write_checkpoint
from texface.errors import CheckpointError

# The readers shipped in the package (each folder has a MODEL_CARD.md): load_reader(SHIPPED_READERS[kind]).
ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED_READERS = {"attribute_classifier": ASSETS / "attribute_classifier", "identity_encoder": ASSETS / "identity"}

READER_FORMAT = "texface.faceworld.reader"
READER_VERSION = 1


class ConvEncoder(nn.Module):
    """Strided 3x3 convolutions (GroupNorm + SiLU), global average pooling: (B, 3, R, R) -> (B, width[-1])."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        layers, channels = [], 3
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
                       nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU()]
            channels = width
        self.net = nn.Sequential(*layers)
        self.out_dim = channels

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image).mean((2, 3))


class AttributeClassifier(nn.Module):
    """Image -> {attribute: logits (B, levels)}; :meth:`levels` gives the most likely level per attribute."""

    kind = "attribute_classifier"

    def __init__(self, *, widths: tuple[int, ...] = (32, 64, 128, 256), resolution: int = 64):
        super().__init__()
        self.config = {"widths": list(widths), "resolution": int(resolution)}
        self.encoder = ConvEncoder(tuple(widths))
        self.heads = nn.ModuleDict({a: nn.Linear(self.encoder.out_dim, NUM_LEVELS[a]) for a in ATTRIBUTES})

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        features = self.encoder(resize(image, self.config["resolution"]))
        return {a: head(features) for a, head in self.heads.items()}

    @torch.no_grad()
    def levels(self, image: Tensor) -> dict[str, Tensor]:
        """The most likely level (B,) long of every attribute."""
        return {a: logits.argmax(-1) for a, logits in self(image).items()}


class IdentityEncoder(nn.Module):
    """Image -> unit embedding (B, dim); the cosine of two embeddings is their identity similarity."""

    kind = "identity_encoder"

    def __init__(self, *, widths: tuple[int, ...] = (32, 64, 128, 256), dim: int = 128, resolution: int = 64):
        super().__init__()
        self.config = {"widths": list(widths), "dim": int(dim), "resolution": int(resolution)}
        self.encoder = ConvEncoder(tuple(widths))
        self.project = nn.Linear(self.encoder.out_dim, dim)

    def forward(self, image: Tensor) -> Tensor:
        return F.normalize(self.project(self.encoder(resize(image, self.config["resolution"]))), dim=-1)


READERS = {cls.kind: cls for cls in (AttributeClassifier, IdentityEncoder)}


def resize(image: Tensor, resolution: int) -> Tensor:
    """Images (B, 3, H, W) at the reader's resolution (area averaging down, bilinear up)."""
    if image.shape[-1] == resolution and image.shape[-2] == resolution:
        return image
    if image.shape[-1] > resolution:
        return F.adaptive_avg_pool2d(image, resolution)
    return F.interpolate(image, size=(resolution, resolution), mode="bilinear", align_corners=False)


def save_reader(model: nn.Module, path: str | os.PathLike, *, extra: dict | None = None,
                dtype: torch.dtype = torch.float32) -> Path:
    """Write a reader (its kind, constructor config, ``extra`` data such as its measured accuracy, weights)."""
    config = {"format": READER_FORMAT, "version": READER_VERSION, "kind": model.kind, "config": model.config,
              "extra": dict(extra or {})}
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    return write_checkpoint(path, config, {"model": state})


def load_reader(path: str | os.PathLike, map_location="cpu") -> nn.Module:
    """A reader written by :func:`save_reader`, in eval mode with gradients off."""
    config = read_config(path, kind="face-world reader", format=READER_FORMAT, version=("version", READER_VERSION))
    if config.get("kind") not in READERS:
        raise CheckpointError(f"{path}: unknown reader kind {config.get('kind')!r}; expected one of {sorted(READERS)}")
    try:
        model = READERS[config["kind"]](**config.get("config", {}))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}/config.json has invalid reader settings: {err}") from None
    load_state_strict(model, read_tensors(path, "model"), source=path, kind=config["kind"].replace("_", " "))
    return model.to(map_location).eval().requires_grad_(False)
