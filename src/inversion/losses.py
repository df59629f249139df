"""The losses of the Re-PoI inversion training (TEx-Face ``inversion/criteria``), as small functions.

- :func:`pixel_mse`: mean squared error on [-1, 1] images;
- :func:`w_norm`: mean Frobenius distance of the W+ codes to the generator's average w (not squared);
- :func:`background_depth`: pulls the rendered depth of background pixels to a constant;
- :func:`identity_loss`: 1 - cosine of identity embeddings (ArcFace, or the face world's identity encoder);
- LPIPS: ``LPIPS(...)(a, b).mean()`` (:mod:`texface.metrics.lpips`; :func:`build_lpips` loads it).

The loss weights are not part of the official release; they are the training config's choice.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from faceworld.readers import SHIPPED_READERS, IdentityEncoder, load_reader
from texface.errors import CheckpointError, ConfigError
from texface.metrics.arcface import WEIGHTS_FILE, ArcFace
from texface.metrics.lpips import BACKBONE_FILES, LPIPS, NETS

# Background depth target of TEx-Face's depth loss (EG3D rays span 2.25-3.3, the camera radius is 2.7).
BACKGROUND_DEPTH = 2.7729
IDENTITY_KINDS = ("arcface", "world")


def pixel_mse(a: Tensor, b: Tensor) -> Tensor:
    """mean((a - b)^2) over every element of two images (B, 3, H, W) in [-1, 1]; a scalar."""
    return F.mse_loss(a, b)


def w_norm(codes: Tensor, w_avg: Tensor) -> Tensor:
    """sum_b ||codes_b - w_avg||_F / B (the norm, not its square); a scalar.

    Args:
        codes: W+ codes (B, 14, 512).
        w_avg: the generator's average w, (1, 14, 512) or (512,) (broadcast over the 14 rows).
    """
    return (codes - w_avg).flatten(1).norm(dim=1).mean()


def mask_from_parsing(labels: Tensor) -> Tensor:
    """The foreground mask (B, 1, H, W) float of a face-parsing class map (B, H, W) (class 0 = background)."""
    return (labels != 0).float()[:, None]


def background_depth(depth: Tensor, mask: Tensor, target: float = BACKGROUND_DEPTH) -> Tensor:
    """mean over all pixels of ((depth - target) * (1 - m))^2, m = the mask at the depth's resolution; a scalar.

    Args:
        depth: rendered depth (B, 1, h, w) (EG3D's ``image_depth``).
        mask: foreground (B, 1, H, W) in [0, 1] (:func:`mask_from_parsing` of a class map), resized to (h, w)
            by nearest neighbour (as the official loss; 256 -> 64 takes rows and columns 0, 4, ..., 252).
        target: the depth that background pixels are pulled to.
    """
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be (B, 1, H, W), got {tuple(mask.shape)}; use mask_from_parsing() for a "
                         "class map")
    background = 1 - F.interpolate(mask.to(depth.dtype), size=depth.shape[-2:], mode="nearest")
    return ((depth - target) * background).pow(2).mean()


def embedding(network: nn.Module, images: Tensor) -> Tensor:
    """Unit identity embeddings (B, D) of images: ``network.embed`` when it has one (ArcFace: crop and pool of
    256x256 images), else ``network(images)`` (the face world's IdentityEncoder, at any size)."""
    embed = getattr(network, "embed", None)
    return embed(images) if callable(embed) else network(images)


def identity_loss(network: nn.Module, a: Tensor, b: Tensor) -> Tensor:
    """mean_b (1 - <e(a_b), e(b_b)>) with e = :func:`embedding`; a scalar. Gradients flow through both images
    (as in the official loss; the target b usually has none).

    Args:
        network: ArcFace, an IdentityEncoder, or any module giving unit embeddings.
        a: images (B, 3, H, W) in [-1, 1] (the reconstructions).
        b: images (B, 3, H, W) in [-1, 1] (the targets).
    """
    return (1 - (embedding(network, a) * embedding(network, b)).sum(1)).mean()


def build_identity(kind: str, path: str | os.PathLike | None = None) -> nn.Module:
    """The identity network of the ID loss, frozen.

    Args:
        kind: "arcface" (IR-SE50 from ``path``, a ``model_ir_se50.pth``; required) or "world" (the face world's
            IdentityEncoder from the reader directory ``path``; default: the shipped one).
        path: the weights.
    """
    if kind == "arcface":
        if path is None:
            raise ConfigError(f"the ArcFace identity loss needs its weights: pass the path of {WEIGHTS_FILE}")
        return ArcFace.from_file(path)
    if kind == "world":
        path = Path(path) if path is not None else SHIPPED_READERS["identity_encoder"]
        network = load_reader(path)
        if not isinstance(network, IdentityEncoder):
            raise CheckpointError(f"{path} holds a face-world {network.kind} reader, not an identity encoder")
        return network
    raise ConfigError(f"unknown identity network {kind!r}; choose one of {', '.join(IDENTITY_KINDS)}")


def build_lpips(net: str = "alex", backbone: str | os.PathLike | None = None,
                heads: str | os.PathLike | None = None) -> LPIPS:
    """LPIPS from local weight files (a missing file is an error, never a silent zero loss).

    Args:
        net: "alex" (the official loss) or "vgg".
        backbone: torchvision's ImageNet weights (``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``).
        heads: the LPIPS v0.1 heads (``alex.pth`` / ``vgg.pth`` of richzhang/PerceptualSimilarity).
    """
    if net not in NETS:
        raise ConfigError(f"unknown LPIPS network {net!r}; choose one of {', '.join(NETS)}")
    if backbone is None or heads is None:
        raise ConfigError(f"the LPIPS-{net} loss needs two weight files: pass backbone=<torchvision's "
                          f"{BACKBONE_FILES[net]}> and heads=<LPIPS v0.1 {net}.pth>")
    return LPIPS.from_files(net, backbone=backbone, heads=heads)
