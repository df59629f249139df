"""Style codes of face-world heads: what the SCD trains on and is scored with in the face world.

:class:`WorldCodes` is the face world's counterpart of :class:`scd.synthetic.AttributeWorld` (the same interface:
``sample``, ``metrics``, ``config``): the code of head ``z`` is the world generator's ``mapping(z)`` (W+, every row
the same w), its captions and attribute levels are the head's, and its expression condition is the head's 50-d
expression code. Sampled codes are rendered by that generator; :meth:`WorldCodes.render_metrics` scores the renders
with the attribute classifier.

Codes are read back by a **probe**: ridge regression (float64, closed form) from the code to the head latent,
fitted on ``probe_heads`` heads of their own sample seed; levels then follow from the read latent exactly as the
world derives them (:func:`faceworld.latents.levels_from_latents`). The probe is imperfect: ``probe_scores`` gives
its accuracy on true codes of other heads, the ceiling of every code-level figure.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from eg3d.checkpoint import build_generator
from faceworld.generator_fit import head_codes
from faceworld.latents import EXPRESSION_SLICE, levels_from_latents
from faceworld.readers import SHIPPED_READERS, load_reader
from faceworld.world import FaceWorld
from texface.captions import ATTRIBUTES, NUM_LEVELS
from texface.errors import ConfigError
from texface.metrics.attributes import accuracy_metrics
from texface.metrics.codes import CodeScores
from texface.stylecodes import StyleCodeSet

PROBE_SEED = 10 ** 6 + 7   # sample seed of the probe's heads (training and validation use small seeds)
RIDGE = 1e-3
RENDER_CAMERA_SEED = 424242  # the cameras render_metrics draws
FEATURE_DIMS = 64           # principal directions of the codes that the Frechet distance compares


class WorldCodes(CodeScores):
    """Codes, captions and expressions of face-world heads (see the module docstring).

    Args:
        seed: the face world's seed (:class:`faceworld.world.FaceWorld`).
        generator: a generator checkpoint whose mapping makes the codes; None = the shipped world generator.
        probe_heads: heads the probe is fitted on.
    """

    def __init__(self, seed: int = 0, *, generator: str | os.PathLike | None = None, probe_heads: int = 8192):
        if probe_heads < 1024:
            raise ConfigError(f"probe_heads must be at least 1024 (the probe reads 512-d codes), got {probe_heads}")
        self.seed, self.generator_path, self.probe_heads = int(seed), generator, int(probe_heads)
        self.world = FaceWorld(self.seed)
        self.generator = build_generator(ckpt=generator, preset="world")
        self._fit_probe()

    @property
    def config(self) -> dict:
        """Plain data that rebuilds this world: ``texface.config.instantiate(world.config)``."""
        return {"_target_": "faceworld.codes.WorldCodes", "seed": self.seed,
                "generator": None if self.generator_path is None else str(self.generator_path),
                "probe_heads": self.probe_heads}

    @torch.no_grad()
    def codes_of(self, latents: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
        """Style codes (N, 14, 512) float32 of head latents (N, LATENT_DIM), on the CPU."""
        return torch.cat([head_codes(self.generator, latents[i:i + batch_size]).float()
                          for i in range(0, len(latents), batch_size)])

    def sample(self, n: int, seed: int = 0) -> StyleCodeSet:
        """``n`` heads of sample seed ``seed``: codes, expressions, captions; ``meta['labels']`` holds their levels."""
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        latents = self.world.latents(n, seed=seed)
        heads = self.world.heads_from_latents(latents, seed=seed)
        meta = {"source": "faceworld.codes.WorldCodes", "world": self.config, "sample_seed": int(seed),
                "attributes": {a: NUM_LEVELS[a] for a in ATTRIBUTES},
                "labels": {a: heads.levels[a].tolist() for a in ATTRIBUTES}}
        return StyleCodeSet(codes=self.codes_of(latents), expressions=latents[:, EXPRESSION_SLICE].float(),
                            captions=heads.captions, ids=[f"faceworld-{seed}-{i:06d}" for i in range(n)], meta=meta)

    # ---- reading codes back ----------------------------------------------------------------------------------
    def _fit_probe(self) -> None:
        latents = self.world.latents(self.probe_heads, seed=PROBE_SEED)
        x = self.codes_of(latents)[:, 0].double()                               # (N, 512)
        self._mean = x.mean(0)
        centred = x - self._mean
        design = torch.cat([centred, torch.ones(len(x), 1, dtype=torch.float64)], 1)
        gram = design.T @ design + RIDGE * torch.eye(design.shape[1], dtype=torch.float64)
        self._weights = torch.linalg.solve(gram, design.T @ latents.double())   # (513, LATENT_DIM)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        self._directions = v[:FEATURE_DIMS]                                      # (F, 512)

    def _rows(self, codes: torch.Tensor) -> torch.Tensor:
        codes = torch.as_tensor(codes)
        if codes.dim() != 3 or tuple(codes.shape[1:]) != (14, 512):
            raise ValueError(f"codes must have shape (N, 14, 512), got {tuple(codes.shape)}")
        return codes.detach().cpu().double().mean(1) - self._mean               # (N, 512) centred

    def read_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, LATENT_DIM) float64 head latents read from codes by the probe."""
        rows = self._rows(codes)
        return torch.cat([rows, torch.ones(len(rows), 1, dtype=torch.float64)], 1) @ self._weights

    def labels_of(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Levels (N,) long per attribute of the latents the probe reads."""
        return levels_from_latents(self.read_latents(codes).float())

    def recover_expression(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, 50) float64 expression codes the probe reads."""
        return self.read_latents(codes)[:, EXPRESSION_SLICE]

    def features(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, FEATURE_DIMS) float64: the codes on their principal directions (for the Frechet distance)."""
        return self._rows(codes) @ self._directions.T

    # ---- scores: attribute_accuracy, expression_error, frechet_distance and metrics come from CodeScores ---------
    @torch.no_grad()
    def render_metrics(self, codes: torch.Tensor, captions: Sequence[str], *, classifier: torch.nn.Module | None = None,
                       camera_seed: int = RENDER_CAMERA_SEED, batch_size: int = 8) -> dict[str, float]:
        """Attribute accuracy of the codes' renders: the generator renders each code from a world camera (seeded,
        the same cameras for every call), the attribute classifier (default: the shipped one) reads the levels.
        Keys: render_attr_acc/mean (degree), /chance, /<attribute>, render_attr_acc_presence/mean and /chance."""
        device = next(self.generator.parameters()).device
        classifier = load_reader(SHIPPED_READERS["attribute_classifier"]) if classifier is None else classifier
        classifier = classifier.to(device)
        codes = torch.as_tensor(codes).float()
        cameras = self.world.sample_cameras(len(codes), seed=camera_seed)
        levels = []
        for start in range(0, len(codes), batch_size):
            ws, c = codes[start:start + batch_size].to(device), cameras[start:start + batch_size].to(device)
            image = self.generator.synthesis(ws, c, noise_mode="const", deterministic=True)["image"]
            read = classifier.levels(image)
            levels.append(torch.stack([read[a] for a in ATTRIBUTES], -1).cpu())
        return accuracy_metrics(dict(zip(ATTRIBUTES, torch.cat(levels).unbind(-1))), captions,
                                prefix="render_attr_acc")

    def probe_scores(self, n: int = 2048, seed: int = PROBE_SEED + 1) -> dict[str, float]:
        """The probe on true codes of ``n`` other heads: exact level accuracy per attribute and expression RMSE."""
        latents = self.world.latents(n, seed=seed)
        truth = levels_from_latents(latents)
        read = self.read_latents(self.codes_of(latents))
        levels = levels_from_latents(read.float())
        scores = {f"probe/{a}": float((levels[a] == truth[a]).double().mean()) for a in ATTRIBUTES}
        scores["probe/exp_rmse"] = float((read[:, EXPRESSION_SLICE] - latents[:, EXPRESSION_SLICE].double())
                                         .pow(2).mean().sqrt())
        return scores
