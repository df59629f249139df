"""The face world: seeded sampling of heads (levels, identities, expressions, captions) and of their cameras.

``FaceWorld(seed)`` fixes the world; ``world.sample(n, seed)`` draws n heads and ``world.sample_cameras(n, seed)``
n FFHQ-like cameras. Every draw happens on the CPU from ``torch.Generator``s seeded by (world seed, sample seed,
stream), so the same seeds give the same heads on any machine and device, and heads, identities, expressions,
captions and cameras are independent streams (asking for cameras never changes the heads).

- **Latent**: every head is one standard-normal vector (:mod:`faceworld.latents`), drawn from the latent stream;
  it fixes the attribute levels (quantiles of the priors of the code-level world; beard 0 for women), the identity
  vector and the expression code (times ``expression_std``). ``heads_from_latents`` turns any latents into heads,
  so the world's generator, whose ``z`` is this latent, renders every random seed as a head.
- **Captions**: ``texface.captions.caption_lists`` (1..``max_captions`` per head, ``p_uncaptioned`` get none).
"""
from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch

from faceworld.cameras import PITCH_CLIP, PITCH_STD, YAW_CLIP, YAW_STD, labels_at, sample_poses
from faceworld.heads import BETA
from faceworld.latents import (EXPRESSION_SLICE, IDENTITY_SLICE, LATENT_DIM, check_latents, levels_from_latents,
                               params_from_latents)
from faceworld.params import HeadParams, make_params
from faceworld.render import render
from texface.captions import ATTRIBUTES, caption_lists
from texface.options import check_int, check_number

_STREAMS = {"latents": 0, "captions": 3, "cameras": 4}


@dataclasses.dataclass
class Heads:
    """n sampled heads (CPU tensors)."""
    ids: list[str]
    latents: torch.Tensor             # (n, LATENT_DIM): everything below follows from them
    levels: dict[str, torch.Tensor]   # attribute -> (n,) long
    identity: torch.Tensor            # (n, IDENTITY_DIM)
    expressions: torch.Tensor         # (n, 50)
    captions: list[list[str]]

    def __len__(self) -> int:
        return len(self.ids)

    def params(self, device: str | torch.device = "cpu") -> HeadParams:
        """The heads' SDF parameters on ``device``."""
        return make_params({a: v.to(device) for a, v in self.levels.items()}, self.identity.to(device),
                           self.expressions.to(device))

    def subset(self, index) -> Heads:
        """The heads at ``index`` (a sequence of ints or a long tensor), in that order."""
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        rows = index.tolist()
        return Heads(ids=[self.ids[i] for i in rows], latents=self.latents[index],
                     levels={a: v[index] for a, v in self.levels.items()}, identity=self.identity[index],
                     expressions=self.expressions[index], captions=[self.captions[i] for i in rows])


class FaceWorld:
    """A seeded world of procedural heads; ``FaceWorld(**world.config)`` rebuilds it.

    Args:
        seed: the world seed (combined with every sample seed).
        expression_std: scale of the expression codes.
        yaw_std, yaw_clip, pitch_std, pitch_clip: camera spread in radians (:mod:`faceworld.cameras`).
        p_mention, p_gender, max_captions, p_uncaptioned: caption settings (``texface.captions.caption_lists``).
        beta: Laplace density scale of the field and of the rendered silhouettes (world units).
    """

    def __init__(self, seed: int = 0, *, expression_std: float = 1.0, yaw_std: float = YAW_STD,
                 yaw_clip: float = YAW_CLIP, pitch_std: float = PITCH_STD, pitch_clip: float = PITCH_CLIP,
                 p_mention: float = 0.5, p_gender: float = 0.8, max_captions: int = 3, p_uncaptioned: float = 0.1,
                 beta: float = BETA):
        self.seed = check_int("seed", seed, 0)
        self.expression_std = check_number("expression_std", expression_std, minimum=0)
        self.yaw_std = check_number("yaw_std", yaw_std, minimum=0)
        self.yaw_clip = check_number("yaw_clip", yaw_clip, minimum=0, maximum=1.5)
        self.pitch_std = check_number("pitch_std", pitch_std, minimum=0)
        self.pitch_clip = check_number("pitch_clip", pitch_clip, minimum=0, maximum=1.5)
        self.p_mention = check_number("p_mention", p_mention, minimum=0, maximum=1)
        self.p_gender = check_number("p_gender", p_gender, minimum=0, maximum=1)
        self.max_captions = check_int("max_captions", max_captions, 1)
        self.p_uncaptioned = check_number("p_uncaptioned", p_uncaptioned, minimum=0, maximum=1)
        self.beta = check_number("beta", beta, minimum=1e-5)

    @property
    def config(self) -> dict:
        return {"seed": self.seed, "expression_std": self.expression_std, "yaw_std": self.yaw_std,
                "yaw_clip": self.yaw_clip, "pitch_std": self.pitch_std, "pitch_clip": self.pitch_clip,
                "p_mention": self.p_mention, "p_gender": self.p_gender, "max_captions": self.max_captions,
                "p_uncaptioned": self.p_uncaptioned, "beta": self.beta}

    def _seed(self, sample_seed: int, stream: str) -> int:
        state = np.random.SeedSequence([self.seed, sample_seed, _STREAMS[stream]]).generate_state(2, np.uint32)
        return (int(state[0]) << 31 | int(state[1])) & (2 ** 63 - 1)

    def _generator(self, sample_seed: int, stream: str) -> torch.Generator:
        return torch.Generator().manual_seed(self._seed(sample_seed, stream))

    def latents(self, n: int, seed: int = 0) -> torch.Tensor:
        """Head latents (n, LATENT_DIM) of sample seed ``seed`` (standard normals, drawn on the CPU)."""
        check_int("n", n, 0)
        check_int("seed", seed, 0)
        return torch.randn(n, LATENT_DIM, generator=self._generator(seed, "latents"))

    def heads_from_latents(self, latents: torch.Tensor, seed: int = 0) -> Heads:
        """The heads of latents (n, LATENT_DIM), their captions drawn from the caption stream of ``seed`` and
        their ids ``"w<world>-s<seed>-<index>"``."""
        latents = check_latents(torch.as_tensor(latents, dtype=torch.float32).cpu())
        levels = levels_from_latents(latents)
        captions = caption_lists({a: levels[a].tolist() for a in ATTRIBUTES},
                                 random.Random(self._seed(seed, "captions")), p_mention=self.p_mention,
                                 p_gender=self.p_gender, max_captions=self.max_captions,
                                 p_uncaptioned=self.p_uncaptioned)
        return Heads(ids=[f"w{self.seed}-s{seed}-{i:06d}" for i in range(len(latents))], latents=latents,
                     levels=levels, identity=latents[:, IDENTITY_SLICE].clone(),
                     expressions=self.expression_std * latents[:, EXPRESSION_SLICE], captions=captions)

    def sample(self, n: int, seed: int = 0) -> Heads:
        """n heads drawn with sample seed ``seed``: ``heads_from_latents(latents(n, seed), seed)``."""
        return self.heads_from_latents(self.latents(n, seed), seed)

    def sample_poses(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Yaw and pitch offsets (n,) from the frontal view, radians (the world's camera spread)."""
        return sample_poses(n, self._generator(seed, "cameras"), yaw_std=self.yaw_std, yaw_clip=self.yaw_clip,
                            pitch_std=self.pitch_std, pitch_clip=self.pitch_clip)

    def sample_cameras(self, n: int, seed: int = 0) -> torch.Tensor:
        """n camera labels (n, 25) with the world's spread (:meth:`sample_poses`)."""
        return labels_at(*self.sample_poses(n, seed))

    def params(self, latents: torch.Tensor) -> HeadParams:
        """HeadParams of head latents (n, LATENT_DIM) with this world's expression scale, on their device."""
        return params_from_latents(latents, expression_std=self.expression_std)

    def render(self, heads: Heads | HeadParams, cameras: torch.Tensor, resolution: int = 128, *,
               device: str | torch.device = "cpu", **kwargs) -> dict[str, torch.Tensor]:
        """:func:`faceworld.render.render` with the world's beta; ``heads`` and ``cameras`` (B, 25) pair up."""
        params = heads.params(device) if isinstance(heads, Heads) else heads.to(device)
        return render(params, cameras.to(device), resolution, beta=self.beta, **kwargs)
