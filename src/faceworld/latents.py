"""Head latents: every face-world head as one standard-normal vector, the input of the world's generator.

A latent ``z`` (LATENT_DIM = 6 + 26 + 50 = 82 numbers, i.i.d. N(0, 1)) fixes a head:

- ``z[:, :6]`` -> the attribute levels, in ``texface.captions.ATTRIBUTES`` order: level k of attribute a is chosen
  when ``Phi(z_a)`` (the normal CDF, uniform in (0, 1)) falls in the k-th interval of the prior's cumulative sums,
  so the levels follow ``LEVEL_PRIORS`` exactly; a woman's beard is level 0;
- ``z[:, 6:32]`` -> the identity vector (:data:`faceworld.params.IDENTITY_FIELDS`, standard normals);
- ``z[:, 32:82]`` -> the expression code, times the world's ``expression_std``.

So any standard-normal vector is a valid head. The world's generator takes this latent as its ``z``: its mapping
network learns the world's own generative process, a random seed renders a head, and a head's true style code is
the mapping of its latent.
"""
from __future__ import annotations

import torch

from faceworld.expression import EXPRESSION_DIM
from faceworld.params import IDENTITY_DIM, HeadParams, make_params
from texface.captions import ATTRIBUTES, LEVEL_PRIORS

N_ATTRIBUTES = len(ATTRIBUTES)
LATENT_DIM = N_ATTRIBUTES + IDENTITY_DIM + EXPRESSION_DIM
IDENTITY_SLICE = slice(N_ATTRIBUTES, N_ATTRIBUTES + IDENTITY_DIM)
EXPRESSION_SLICE = slice(N_ATTRIBUTES + IDENTITY_DIM, LATENT_DIM)


def check_latents(z: torch.Tensor) -> torch.Tensor:
    if z.ndim != 2 or z.shape[1] != LATENT_DIM:
        raise ValueError(f"head latents must be (n, {LATENT_DIM}), got {tuple(z.shape)}")
    return z


def levels_from_latents(z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Attribute levels (n,) long of latents (n, LATENT_DIM), on their device (see the module docstring)."""
    check_latents(z)
    u = torch.special.ndtr(z[:, :N_ATTRIBUTES].double())  # (n, 6) uniform in (0, 1)
    levels = {}
    for k, attr in enumerate(ATTRIBUTES):
        edges = torch.tensor(LEVEL_PRIORS[attr], dtype=torch.float64, device=z.device).cumsum(0)[:-1]
        levels[attr] = torch.searchsorted(edges, u[:, k].contiguous(), right=True)
    levels["beard"] = levels["beard"] * levels["gender"]
    return levels


def params_from_latents(z: torch.Tensor, *, expression_std: float = 1.0) -> HeadParams:
    """HeadParams of latents (n, LATENT_DIM), on their device."""
    check_latents(z)
    return make_params(levels_from_latents(z), z[:, IDENTITY_SLICE].float(),
                       expression_std * z[:, EXPRESSION_SLICE].float())
