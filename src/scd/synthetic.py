"""The synthetic attribute world: seeded W+ style codes with CelebA-Dialog-style captions, and its metrics.

No real style codes can be downloaded here, so this world is the project's default data and learning benchmark.
A code (flattened to D = 14 * 512) is

    code = w_avg + sum_a strength * v_a * d_a  +  M @ exp  +  identity_std * sum_j z_j * u_j  +  noise_std * eps

with one unit direction d_a per attribute, M = (D, 50) a fixed linear expression effect, u_j an identity subspace of
rank ``identity_rank``, z, exp ~ N(0, 1) (exp scaled by ``exp_std``) and eps ~ N(0, I). The attribute directions,
the expression subspace, the identity subspace and ``probe_dims`` extra directions are mutually orthonormal
(one QR of a seeded Gaussian matrix), so each metric reads its own part of the code exactly.

Every direction repeats one 512-d direction on all 14 layers (scaled by 1/sqrt(14) to unit norm). Real W+ codes
have this structure: EG3D's mapping network gives the same w to every layer, and inverted codes stay close to
that; only the residual noise differs between layers. It also matters for learning: the official denoiser applies
the same weights to every layer token and sees a token's position only through the attention scores, and it
fitted directions drawn independently per layer (an earlier version of this world) much worse
(docs/LEARNING.md).

Attributes (CelebA-Dialog): gender (0 female, 1 male), and smiling, bangs, eyeglasses, beard, age with degrees
0..5. Level k maps to v = 2k / (L - 1) - 1 in [-1, 1] (L = number of levels); reading a code back projects it onto
d_a and inverts that map. Women never have a beard (level 0) and their captions never mention one.

Levels, priors and captions are the project's shared ones (:mod:`texface.captions`): each attribute is mentioned
with probability ``p_mention`` (gender ``p_gender``), codes get 1..``max_captions`` captions, and a fraction
``p_uncaptioned`` gets none.

Metrics (see data/README.md for definitions and chance levels): ``attribute_accuracy``, ``expression_error`` and
``frechet_distance`` (over the world's ``features``, a fixed orthonormal projection of the code), all of them at
once with ``metrics``.

CLI: ``python -m scd.synthesize OUT_DIR --n 5000 --seed 0`` writes a dataset in the format of data/README.md.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

from texface.captions import ATTRIBUTES, NUM_LEVELS, caption_lists, sample_levels
from texface.errors import ConfigError
from texface.metrics.codes import CodeScores
from texface.stylecodes import CODE_DIM, EXP_DIM, N_TOKENS, StyleCodeSet


class AttributeWorld(CodeScores):
    """A seeded synthetic world of style codes, captions and expressions (see the module docstring).

    Args:
        seed: seed of the world's directions and expression effect (samples have their own seed).
        w_avg: (512,) or (14, 512) mean code; default zeros.
        strength: norm of an attribute's effect at its extreme levels (v = +-1).
        exp_strength: scale of the expression effect; the gains of the 50 expression components go linearly from
            1.5 to 0.5 times this.
        exp_std: standard deviation of the sampled expression coefficients.
        identity_rank, identity_std: rank and per-component standard deviation of the identity variation.
        noise_std: per-coordinate isotropic residual noise (it sets the metrics' floor on true codes).
        probe_dims: extra fixed random directions in ``features`` (catch off-manifold junk in the Frechet distance).
        p_mention, p_gender: probability that a caption mentions an attribute / the gender.
        max_captions: captions per captioned code are uniform in 1..max_captions.
        p_uncaptioned: fraction of codes without any caption.
    """

    def __init__(self, seed: int = 0, *, w_avg: Sequence[float] | torch.Tensor | None = None,
                 strength: float = 3.0, exp_strength: float = 1.0, exp_std: float = 1.0, identity_rank: int = 32,
                 identity_std: float = 1.0, noise_std: float = 0.02, probe_dims: int = 32, p_mention: float = 0.5,
                 p_gender: float = 0.8, max_captions: int = 3, p_uncaptioned: float = 0.1):
        for name, value in (("strength", strength), ("exp_strength", exp_strength), ("exp_std", exp_std)):
            if not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        for name, value in (("identity_std", identity_std), ("noise_std", noise_std)):
            if not value >= 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        for name, value in (("p_mention", p_mention), ("p_gender", p_gender), ("p_uncaptioned", p_uncaptioned)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {value}")
        if identity_rank < 0 or probe_dims < 0 or max_captions < 1:
            raise ConfigError(f"identity_rank and probe_dims must be >= 0 and max_captions >= 1, got "
                             f"{identity_rank}, {probe_dims} and {max_captions}")
        n_basis = len(ATTRIBUTES) + EXP_DIM + identity_rank + probe_dims
        if n_basis > CODE_DIM:
            raise ConfigError(f"identity_rank + probe_dims are too large: the world needs {n_basis} orthonormal "
                             f"directions in {CODE_DIM} dimensions")
        w = torch.zeros(CODE_DIM) if w_avg is None else torch.as_tensor(w_avg, dtype=torch.float32)
        if tuple(w.shape) == (CODE_DIM,):
            w = w.expand(N_TOKENS, CODE_DIM)
        if tuple(w.shape) != (N_TOKENS, CODE_DIM) or not torch.isfinite(w).all():
            raise ConfigError(f"w_avg must be a finite (512,) or (14, 512) tensor, got shape {tuple(w.shape)}")
        self.seed, self.strength = int(seed), float(strength)
        self.exp_strength, self.exp_std = float(exp_strength), float(exp_std)
        self.identity_rank, self.identity_std = int(identity_rank), float(identity_std)
        self.noise_std = float(noise_std)
        self.probe_dims, self.p_mention, self.p_gender = int(probe_dims), float(p_mention), float(p_gender)
        self.max_captions, self.p_uncaptioned = int(max_captions), float(p_uncaptioned)
        self._w_avg_arg = None if w_avg is None else w[0].tolist() if (w == w[0]).all() else w.tolist()
        self.w_avg = w.contiguous().clone()  # (14, 512)

        g = torch.Generator().manual_seed(self.seed)
        basis, _ = torch.linalg.qr(torch.randn(CODE_DIM, n_basis, generator=g, dtype=torch.float64))  # (512, K)
        # (K, D) float64, orthonormal rows: attributes | expression | identity | probes. Every direction is the
        # same 512-d direction on all 14 layers, as in real W+ codes (see the module docstring).
        self.basis = (basis.T.unsqueeze(1).expand(n_basis, N_TOKENS, CODE_DIM) / math.sqrt(N_TOKENS)).reshape(
            n_basis, N_TOKENS * CODE_DIM).contiguous()
        n_attr = len(ATTRIBUTES)
        self._exp_rows = slice(n_attr, n_attr + EXP_DIM)
        self._id_rows = slice(n_attr + EXP_DIM, n_attr + EXP_DIM + identity_rank)
        # Expression effect M = Q_exp @ A with A = exp_strength * R diag(gains): a dense, well-conditioned map.
        rot, _ = torch.linalg.qr(torch.randn(EXP_DIM, EXP_DIM, generator=g, dtype=torch.float64))
        gains = torch.linspace(1.5, 0.5, EXP_DIM, dtype=torch.float64)
        self.exp_mix = self.exp_strength * rot * gains  # (50, 50): exp coordinates in the expression subspace
        self.expression_matrix = (self.basis[self._exp_rows].T @ self.exp_mix).float()  # (D, 50)
        self._exp_pinv = torch.linalg.solve(self.exp_mix, self.basis[self._exp_rows])  # (50, D) = pinv(M)
        self._gen_basis = self.basis[: n_attr + EXP_DIM + identity_rank].float()  # (K', D)

    @property
    def config(self) -> dict:
        """The constructor arguments as plain data: ``AttributeWorld(**world.config)`` rebuilds this world."""
        return {"seed": self.seed, "w_avg": self._w_avg_arg, "strength": self.strength,
                "exp_strength": self.exp_strength, "exp_std": self.exp_std, "identity_rank": self.identity_rank,
                "identity_std": self.identity_std, "noise_std": self.noise_std, "probe_dims": self.probe_dims,
                "p_mention": self.p_mention, "p_gender": self.p_gender, "max_captions": self.max_captions,
                "p_uncaptioned": self.p_uncaptioned}

    @property
    def directions(self) -> torch.Tensor:
        """(6, 14, 512) unit attribute directions, in ATTRIBUTES order."""
        return self.basis[: len(ATTRIBUTES)].float().reshape(len(ATTRIBUTES), N_TOKENS, CODE_DIM)

    # ---- sampling -------------------------------------------------------------------------------------------
    def codes_for(self, levels: dict[str, torch.Tensor], exp: torch.Tensor,
                  generator: torch.Generator | None = None, *, identity: bool = True) -> torch.Tensor:
        """(n, 14, 512) codes with the given levels and expressions (n, 50); identity and noise drawn from
        ``generator`` (``identity=False`` gives the noiseless mean code of each condition)."""
        n = exp.shape[0]
        values = torch.stack([2.0 * levels[a].double() / (NUM_LEVELS[a] - 1) - 1.0 for a in ATTRIBUTES], 1)
        coeffs = [self.strength * values, exp.double() @ self.exp_mix.T]
        if identity:
            z = torch.randn(n, self.identity_rank, generator=generator, dtype=torch.float64)
            coeffs.append(self.identity_std * z)
        else:
            coeffs.append(torch.zeros(n, self.identity_rank, dtype=torch.float64))
        coeffs = torch.cat(coeffs, 1).float()  # (n, K')
        if identity and self.noise_std > 0:  # in place: 10k codes are 290 MB
            flat = torch.randn(n, N_TOKENS * CODE_DIM, generator=generator).mul_(self.noise_std)
            flat.addmm_(coeffs, self._gen_basis)
        else:
            flat = coeffs @ self._gen_basis  # (n, D)
        return flat.view(n, N_TOKENS, CODE_DIM).add_(self.w_avg)

    def sample(self, n: int, seed: int = 0) -> StyleCodeSet:
        """``n`` codes, expressions and captions; ``meta`` holds the world config, the ground-truth levels
        (meta['labels'][attribute] = list of n ints) and the level names. Deterministic in (world, n, seed)."""
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        g = torch.Generator().manual_seed(int(seed))
        levels = sample_levels(n, g)
        exp = self.exp_std * torch.randn(n, EXP_DIM, generator=g)  # (n, 50)
        codes = self.codes_for(levels, exp, g)
        rows = {a: levels[a].tolist() for a in ATTRIBUTES}
        captions = caption_lists(rows, random.Random(int(seed)), p_mention=self.p_mention, p_gender=self.p_gender,
                                 max_captions=self.max_captions, p_uncaptioned=self.p_uncaptioned)
        meta = {"source": "scd.synthetic.AttributeWorld", "world": self.config, "sample_seed": int(seed),
                "attributes": {a: NUM_LEVELS[a] for a in ATTRIBUTES}, "labels": rows}
        return StyleCodeSet(codes=codes, expressions=exp, captions=captions,
                            ids=[f"synthetic-{seed}-{i:06d}" for i in range(n)], meta=meta)

    # ---- reading codes back ----------------------------------------------------------------------------------
    def _project(self, codes: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(N, R) float64 coordinates of the centred codes on ``rows`` (R, D); the product runs in float32 (a
        float64 copy of 10k codes would be 570 MB) and the w_avg offset is removed in float64."""
        codes = torch.as_tensor(codes)
        if codes.dim() != 3 or tuple(codes.shape[1:]) != (N_TOKENS, CODE_DIM):
            raise ValueError(f"codes must have shape (N, 14, 512), got {tuple(codes.shape)}")
        offset = self.w_avg.double().flatten() @ rows.T  # (R,)
        return (codes.detach().cpu().float().flatten(1) @ rows.float().T).double() - offset

    def read_levels(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Continuous level estimates (N,) float64 per attribute: the projection on d_a mapped back to 0..L-1."""
        values = self._project(codes, self.basis[: len(ATTRIBUTES)]) / self.strength  # (N, 6)
        return {a: (values[:, k] + 1.0) * (NUM_LEVELS[a] - 1) / 2.0 for k, a in enumerate(ATTRIBUTES)}

    def labels_of(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Levels (N,) long per attribute: ``read_levels`` rounded and clipped to the valid range."""
        return {a: v.round().clamp(0, NUM_LEVELS[a] - 1).long() for a, v in self.read_levels(codes).items()}

    def recover_expression(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, 50) float64 least-squares expression through the known expression matrix."""
        return self._project(codes, self._exp_pinv)

    def features(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, 6 + 50 + identity_rank + probe_dims) float64: the centred code on the world's orthonormal basis."""
        return self._project(codes, self.basis)

    # ---- metrics ---------------------------------------------------------------------------------------------
    def expression_floor(self) -> float:
        """Expected ``expression_error`` of true (code, expression) pairs: noise_std * sqrt(tr((M^T M)^-1) / 50)."""
        gram = self.exp_mix.T @ self.exp_mix
        return self.noise_std * math.sqrt(float(torch.linalg.inv(gram).trace()) / EXP_DIM)
