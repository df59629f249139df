"""LPIPS v0.1 (Zhang et al. 2018), the perceptual distance of the inversion losses, with AlexNet or VGG16.

distance(a, b) = sum over taps l of mean_hw( w_l . (f_l(a) - f_l(b))^2 ), where f_l are the backbone's ReLU
outputs at the taps, each unit-normalised over channels (x / (||x|| + 1e-10)), the inputs in [-1, 1] are first
z-scored with LPIPS' shift and scale, and w_l are the non-negative 1x1 heads.

State-dict names follow pSp's LPIPS port: ``net.layers.<i>.*`` (torchvision ``features`` indices),
``net.mean``/``net.std`` (the shift and scale) and ``lin.<k>.1.weight`` (the heads).
"""
from __future__ import annotations

import os
import re

import torch
from torch import Tensor, nn

from texface.checkpoint import load_state_strict, read_state_dict
from texface.errors import ConfigError

SHIFT = (-.030, -.088, -.188)
SCALE = (.458, .448, .450)
BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
NETS = tuple(BACKBONE_FILES)
# Head keys of richzhang/PerceptualSimilarity (lin<k>.model.1.weight) and of pSp / ours (lin.<k>.1.weight).
_HEAD_KEY = re.compile(r"lin\.?(\d+)\.(?:model\.)?1\.weight")


def _alexnet() -> tuple[list[nn.Module], tuple[int, ...]]:
    """torchvision AlexNet ``features`` up to its last ReLU, and the tap indices (every ReLU)."""
    layers = [nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
              nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
              nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
              nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
              nn.Conv2d(256, 256, 3, padding=1), nn.ReLU()]
    return layers, (1, 4, 7, 9, 11)


def _vgg16() -> tuple[list[nn.Module], tuple[int, ...]]:
    """torchvision VGG16 ``features`` up to relu5_3, and the taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""
    layers, taps, width_in = [], [], 3
    for stage, (width, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        if stage:
            layers.append(nn.MaxPool2d(2, 2))
        for _ in range(convs):
            layers += [nn.Conv2d(width_in, width, 3, padding=1), nn.ReLU()]
            width_in = width
        taps.append(len(layers) - 1)
    return layers, tuple(taps)


class Backbone(nn.Module):
    """Images (B, 3, H, W) in [-1, 1] -> the unit-normalised tap features [(B, C_l, H_l, W_l)]."""

    def __init__(self, net: str):
        super().__init__()
        layers, self.taps = {"alex": _alexnet, "vgg": _vgg16}[net]()
        self.layers = nn.Sequential(*layers)
        self.channels = tuple(next(m.out_channels for m in reversed(layers[:t]) if isinstance(m, nn.Conv2d))
                              for t in self.taps)
        self.register_buffer("mean", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(SCALE).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> list[Tensor]:
        x, features = (x - self.mean) / self.std, []
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index in self.taps:
                features.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return features


class LPIPS(nn.Module):
    """LPIPS v0.1 distance: ``forward(a, b)`` of images (B, 3, H, W) in [-1, 1] -> per-sample distances (B,).

    The loss of the inversion training is the batch mean. A frozen metric network: gradients flow to the inputs,
    never to the weights, and it always runs in eval mode.

    Args:
        net: "alex" (the official inversion loss) or "vgg".
    """

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in NETS:
            raise ConfigError(f"unknown LPIPS network {net!r}; choose one of {', '.join(NETS)}")
        self.net = Backbone(net)
        self.lin = nn.ModuleList(nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False))
                                 for c in self.net.channels)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> LPIPS:
        # Always eval: a parent's .train() (Lightning calls it every epoch) must not turn the heads' dropout on.
        return super().train(False)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Per-sample distances (B,) between images a and b (B, 3, H, W) in [-1, 1]."""
        layers = zip(self.net(a), self.net(b), self.lin)
        return sum(head((fa - fb) ** 2).mean((2, 3)) for fa, fb, head in layers)[:, 0]

    @classmethod
    def from_files(cls, net: str = "alex", *, backbone: str | os.PathLike,
                   heads: str | os.PathLike) -> LPIPS:
        """LPIPS with weights from local files, each loaded strictly.

        Args:
            net: "alex" or "vgg".
            backbone: torchvision's ImageNet state dict (``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``:
                ``features.<i>.*``; ``classifier.*`` is ignored).
            heads: the LPIPS v0.1 heads ``<net>.pth`` of richzhang/PerceptualSimilarity (``lin<k>.model.1.weight``;
                pSp's ``lin.<k>.1.weight`` also loads).
        """
        model = cls(net)
        # The file's own names: missing-key messages then name keys as they appear in the file.
        features = read_state_dict(backbone, what=f"LPIPS-{net} backbone weights",
                                   expected=f"torchvision's {BACKBONE_FILES[net]}")
        features = {k: v for k, v in features.items() if not k.startswith("classifier.")}
        load_state_strict(nn.ModuleDict({"features": model.net.layers}), features, source=backbone,
                          kind=f"torchvision {net} features")
        lin = read_state_dict(heads, what=f"LPIPS-{net} head weights",
                              expected=f"the LPIPS v0.1 {net}.pth (richzhang/PerceptualSimilarity)")
        load_state_strict(nn.ModuleDict({"lin": model.lin}), {_head_key(k): v for k, v in lin.items()},
                          source=heads, kind=f"LPIPS v0.1 {net} heads")
        return model


def _head_key(key: str) -> str:
    """A head file's key in our layout ("lin3.model.1.weight" -> "lin.3.1.weight"); others unchanged, so they
    show up as unexpected keys."""
    match = _HEAD_KEY.fullmatch(key)
    return f"lin.{match.group(1)}.1.weight" if match else key
