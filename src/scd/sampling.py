"""Sampling options and conditions of the SCD, checked once for every caller (pipeline, CLI, callbacks).

- :data:`SAMPLING_KEYS` / :data:`DEFAULT_SAMPLING`: the options of guided DDIM and their defaults (the paper's:
  joint guidance 7, 50 steps, eta 0, x0 clamped to [-1, 1]); a checkpoint may store its own defaults.
- :func:`check_sampling`: validate given options (None = not given).
- :func:`prepare_captions`, :func:`prepare_exp`: conditions normalised to one entry per sample.
- :func:`initial_noise`: the starting codes, drawn on the CPU from a seed, so a seed gives the same start on
  every device.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from omegaconf import ListConfig
from torch import Tensor

from texface.errors import ConfigError
from texface.options import check_int, check_number

SAMPLING_KEYS = ("cond_scale", "text_scale", "exp_scale", "steps", "eta", "clamp")
DEFAULT_SAMPLING = {"cond_scale": 7.0, "steps": 50, "eta": 0.0, "clamp": [-1.0, 1.0]}
# Far beyond any useful setting, small enough that guided predictions stay finite.
MAX_SCALE = 1e4


def _clamp(value) -> tuple[float, float] | bool:
    """``false`` (no clamp) or [low, high] -> False or (low, high)."""
    if value is False:
        return False
    value = list(value) if isinstance(value, (ListConfig, list, tuple)) else value
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            or not value[0] < value[1]):
        raise ConfigError(f"clamp must be [low, high] with low < high, or false for no clamp, got {value!r}")
    return float(value[0]), float(value[1])


def check_sampling_keys(values: dict | None, what: str = "sampling options") -> None:
    """Raise ConfigError naming the keys of ``values`` that are not SAMPLING_KEYS."""
    unknown = set(values or {}) - set(SAMPLING_KEYS)
    if unknown:
        raise ConfigError(f"unknown {what} {sorted(unknown)}; allowed: {', '.join(SAMPLING_KEYS)}")


def check_sampling(values: dict) -> dict:
    """Validate sampling options (keys of SAMPLING_KEYS); None (not given) stays None, clamp ``false`` (no
    clamp) becomes False."""
    checks = {"cond_scale": lambda v: check_number("cond_scale", v, minimum=-MAX_SCALE, maximum=MAX_SCALE),
              "text_scale": lambda v: check_number("text_scale", v, minimum=-MAX_SCALE, maximum=MAX_SCALE),
              "exp_scale": lambda v: check_number("exp_scale", v, minimum=-MAX_SCALE, maximum=MAX_SCALE),
              "steps": lambda v: check_int("steps", v, 1),
              "eta": lambda v: check_number("eta", v, minimum=0.0, maximum=1.0),
              "clamp": _clamp}
    return {k: None if values.get(k) is None else checks[k](values[k]) for k in SAMPLING_KEYS}


def prepare_captions(captions: str | Sequence[str] | None, num_samples: int) -> list[str] | None:
    """One caption per sample: None stays None (no text condition), a single caption is repeated.

    Args:
        captions: None, one caption, or a list of 1 or ``num_samples`` captions.
        num_samples: batch size B.
    Raises ConfigError for an empty list, a non-string entry, or a list whose length is neither 1 nor B.
    """
    if captions is None:
        return None
    if isinstance(captions, str):
        captions = [captions]
    if not isinstance(captions, (list, tuple, ListConfig)):
        raise ConfigError(f"captions must be a caption or a list of captions, got {captions!r}")
    captions = list(captions)
    if not captions:
        raise ConfigError("the caption list is empty: give at least one caption, or captions=null to sample "
                          "without text")
    for caption in captions:
        if not isinstance(caption, str):
            raise ConfigError(f"captions must be strings, got {type(caption).__name__}: {caption!r}")
    if len(captions) == 1:
        return captions * num_samples
    if len(captions) != num_samples:
        raise ConfigError(f"got {len(captions)} captions for num_samples={num_samples}: give one caption for "
                          f"all samples or exactly one per sample")
    return captions


def prepare_exp(exp: Tensor | np.ndarray | Sequence | None, num_samples: int, *, exp_dim: int = 50) -> Tensor | None:
    """One expression code per sample, float32 (B, exp_dim); None stays None (no expression condition).

    Args:
        exp: None, or codes of shape (exp_dim,), (1, exp_dim) or (num_samples, exp_dim).
        num_samples: batch size B.
        exp_dim: length of an expression code (50 FLAME coefficients).
    Raises ConfigError for a wrong shape or a NaN/inf entry.
    """
    if exp is None:
        return None
    exp = torch.as_tensor(np.asarray(exp) if not isinstance(exp, Tensor) else exp)
    if not (exp.is_floating_point() or exp.dtype in (torch.int32, torch.int64)):
        raise ConfigError(f"expression codes must be numbers, got dtype {exp.dtype}")
    exp = exp.detach().to(torch.float32)
    if exp.ndim == 1:
        exp = exp[None]
    if exp.ndim != 2 or exp.shape[1] != exp_dim:
        raise ConfigError(f"expression codes must have shape ({exp_dim},) or (N, {exp_dim}), got "
                          f"{tuple(exp.shape)}")
    if not torch.isfinite(exp).all():
        raise ConfigError("expression codes contain NaN or inf")
    if exp.shape[0] == 1:
        return exp.expand(num_samples, exp_dim).clone()
    if exp.shape[0] != num_samples:
        raise ConfigError(f"got {exp.shape[0]} expression codes for num_samples={num_samples}: give one code "
                          f"for all samples or exactly one per sample")
    return exp


def initial_noise(num_samples: int, n_tokens: int, code_dim: int, *, seed: int) -> Tensor:
    """Standard normal starting codes (B, n_tokens, code_dim), float32, drawn on the CPU from ``seed``."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(num_samples, n_tokens, code_dim, generator=generator)
