"""Sampling W+ style codes from a trained SCD: captions and expression codes in, (B, 14, 512) codes out.

One pipeline shared by ``python -m scd.generate`` and the training callback that logs fixed prompts, so both
draw codes exactly the same way:

1. conditions are normalised to one entry per sample (``prepare_captions``, ``prepare_expressions``);
2. text features are computed ONCE per caption by the frozen text encoder (never at each denoising step);
3. the initial noise comes from a CPU generator seeded with ``seed`` (``initial_noise``), so a seed gives the
   same starting point on every device and the same codes up to floating-point rounding;
4. the diffusion's DDIM sampler runs on the classifier-free-guided denoiser.

Which conditions are given selects the mode: captions and exps (text + expression, the paper's setting),
captions only (text-only: the expression token is the learned null token), exps only (expression-only: the
text is CLIP("")), neither (unconditional: ``StyleCodeDenoiser.guided`` then makes one unguided call per
step).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn


class SCDParts(Protocol):
    """What sampling needs from a model: ``scd.checkpoint.SCDBundle`` has it, and so does any object (e.g. a
    ``types.SimpleNamespace``) holding a training run's EMA denoiser, its diffusion and its text encoder."""

    denoiser: nn.Module      # scd.denoiser.StyleCodeDenoiser
    diffusion: nn.Module     # scd.diffusion.GaussianDiffusion
    text_encoder: nn.Module | None  # scd.text.TextEncoder; None only works without captions


def prepare_captions(captions: str | Sequence[str] | None, num_samples: int) -> list[str] | None:
    """One caption per sample: None stays None (no text condition), a single caption is repeated.

    Args:
        captions: None, one caption, or a list of 1 or ``num_samples`` captions.
        num_samples: batch size B.
    Raises ValueError for an empty list, a non-string entry, or a list whose length is neither 1 nor B.
    """
    if captions is None:
        return None
    if isinstance(captions, str):
        captions = [captions]
    captions = list(captions)
    if not captions:
        raise ValueError("the caption list is empty: give at least one caption, or captions=null to sample "
                         "without text")
    for caption in captions:
        if not isinstance(caption, str):
            raise ValueError(f"captions must be strings, got {type(caption).__name__}: {caption!r}")
    if len(captions) == 1:
        return captions * num_samples
    if len(captions) != num_samples:
        raise ValueError(f"got {len(captions)} captions for num_samples={num_samples}: give one caption for "
                         f"all samples or exactly one per sample")
    return captions


def prepare_expressions(exps: Tensor | np.ndarray | Sequence | None, num_samples: int, *,
                        exp_dim: int = 50) -> Tensor | None:
    """One expression code per sample, float32 (B, exp_dim); None stays None (no expression condition).

    Args:
        exps: None, or codes of shape (exp_dim,), (1, exp_dim) or (num_samples, exp_dim).
        num_samples: batch size B.
        exp_dim: length of an expression code (50 FLAME coefficients).
    Raises ValueError for a wrong shape or a NaN/inf entry.
    """
    if exps is None:
        return None
    exps = torch.as_tensor(np.asarray(exps) if not isinstance(exps, Tensor) else exps)
    if not (exps.is_floating_point() or exps.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"expression codes must be numbers, got dtype {exps.dtype}")
    exps = exps.detach().to(torch.float32)
    if exps.ndim == 1:
        exps = exps[None]
    if exps.ndim != 2 or exps.shape[1] != exp_dim:
        raise ValueError(f"expression codes must have shape ({exp_dim},) or (N, {exp_dim}), got "
                         f"{tuple(exps.shape)}")
    if not torch.isfinite(exps).all():
        raise ValueError("expression codes contain NaN or inf")
    if exps.shape[0] == 1:
        return exps.expand(num_samples, exp_dim).clone()
    if exps.shape[0] != num_samples:
        raise ValueError(f"got {exps.shape[0]} expression codes for num_samples={num_samples}: give one code "
                         f"for all samples or exactly one per sample")
    return exps


def initial_noise(num_samples: int, n_tokens: int, code_dim: int, *, seed: int) -> Tensor:
    """Standard normal starting codes (B, n_tokens, code_dim), float32, drawn on the CPU from ``seed``."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(num_samples, n_tokens, code_dim, generator=generator)


@torch.no_grad()
def sample_codes(model: SCDParts, captions: str | Sequence[str] | None, exps, *, num_samples: int,
                 cond_scale: float = 7.0, text_scale: float | None = None, exp_scale: float | None = None,
                 steps: int = 50, eta: float = 0.0, clamp: tuple[float, float] | None = (-1.0, 1.0),
                 seed: int = 0, noise: Tensor | None = None, progress: bool = False) -> Tensor:
    """Draw W+ codes (num_samples, n_tokens, code_dim) with guided DDIM.

    Args:
        model: an ``SCDParts`` (denoiser, diffusion, text_encoder), e.g. ``load_scd(path)``.
        captions: None (no text), one caption for all samples, or one per sample.
        exps: None (no expression), one (50,) code for all samples, or (num_samples, 50) codes.
        num_samples: how many codes to draw (B >= 1).
        cond_scale: the official joint guidance scale: u + cond_scale * (v(text, exp) - u).
        text_scale, exp_scale: separate guidance scales for text and expression, used when either is set; an
            unset one defaults to ``cond_scale``. Equal scales are the joint guidance; exp_scale=0 guides by
            the text alone (see ``StyleCodeDenoiser.guided`` for the exact combination).
        steps: DDIM steps (50 like the official sampler).
        eta: DDIM eta; 0 is deterministic given the initial noise.
        clamp: range the predicted x0 is clamped to at each step; None for no clamp.
        seed: seeds the initial noise (and the step noise when eta > 0).
        noise: explicit initial noise (B, n_tokens, code_dim); overrides ``seed`` for the start. Pass the same
            noise to compare conditions from one starting point (caption interpolation does).
        progress: show a progress bar over the denoising steps.
    The denoiser runs in eval mode (dropout off); its previous mode is restored afterwards.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    denoiser, diffusion = model.denoiser, model.diffusion
    device = next(denoiser.parameters()).device
    captions = prepare_captions(captions, num_samples)
    exps = prepare_expressions(exps, num_samples, exp_dim=denoiser.config["exp_dim"])
    shape = (num_samples, denoiser.config["n_tokens"], denoiser.config["code_dim"])
    if noise is None:
        noise = initial_noise(*shape, seed=seed)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
    noise = noise.to(device=device, dtype=torch.float32)

    text = None
    if captions is not None:
        if model.text_encoder is None:
            raise ValueError("this checkpoint has no text encoder, so it cannot take captions; sample with "
                             "captions=null")
        text = model.text_encoder.encode(captions).to(device=device, dtype=torch.float32)  # (B, 77, width)
    if exps is not None:
        exps = exps.to(device)  # (B, 50)

    def model_fn(x, t):  # (B, T, D), (B,) -> guided v (B, T, D)
        return denoiser.guided(x, t, text, exps, scale=cond_scale, text_scale=text_scale, exp_scale=exp_scale)

    # The step noise of eta > 0 is drawn on the model's device, from the same seed.
    step_generator = torch.Generator(device=device).manual_seed(int(seed))
    was_training = denoiser.training
    denoiser.eval()
    try:
        codes = diffusion.ddim_sample(model_fn, shape, steps=steps, eta=eta,
                                      clamp=None if clamp is None else tuple(clamp), noise=noise,
                                      generator=step_generator, progress=progress)
    finally:
        denoiser.train(was_training)
    return codes.float()  # (B, n_tokens, code_dim)


def slerp(a: Tensor, b: Tensor, t: float, *, eps: float = 1e-7) -> Tensor:
    """Spherical interpolation between ``a`` and ``b`` along the last axis (per W+ token), in float64.

    For each pair of vectors the result is sin((1-t)w)/sin(w) * a + sin(t w)/sin(w) * b, with w the angle
    between them: t=0 gives a, t=1 gives b, and for vectors of equal norm every intermediate has that norm
    too. Nearly parallel pairs (sin(w) < eps) fall back to linear interpolation. The W+ codes are used as they
    are (absolute, not relative to w_avg), so the angle is measured around the origin of W.
    """
    a64, b64 = a.double(), b.double()
    na = a64.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    nb = b64.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = ((a64 / na) * (b64 / nb)).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin_omega = torch.sin(omega)
    parallel = sin_omega < eps
    safe = torch.where(parallel, torch.ones_like(sin_omega), sin_omega)
    wa = torch.where(parallel, torch.full_like(omega, 1.0 - t), torch.sin((1.0 - t) * omega) / safe)
    wb = torch.where(parallel, torch.full_like(omega, t), torch.sin(t * omega) / safe)
    return (wa * a64 + wb * b64).to(a.dtype)
