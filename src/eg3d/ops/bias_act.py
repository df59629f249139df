"""Bias, activation, gain and clamp in one call (StyleGAN2's ``bias_act``), in plain PyTorch."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Activation:
    """An activation with its default slope parameter and output gain."""
    func: Callable[[torch.Tensor, float], torch.Tensor]
    default_alpha: float = 0.0
    default_gain: float = 1.0


# Gains keep the signal's second moment roughly unchanged (He et al.): sqrt(2) for ReLU-like activations.
ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, alpha: x),
    "relu": Activation(lambda x, alpha: F.relu(x), default_gain=math.sqrt(2)),
    "lrelu": Activation(lambda x, alpha: F.leaky_relu(x, alpha), default_alpha=0.2, default_gain=math.sqrt(2)),
    "tanh": Activation(lambda x, alpha: torch.tanh(x)),
    "sigmoid": Activation(lambda x, alpha: torch.sigmoid(x)),
    "elu": Activation(lambda x, alpha: F.elu(x)),
    "selu": Activation(lambda x, alpha: F.selu(x)),
    "softplus": Activation(lambda x, alpha: F.softplus(x)),
    "swish": Activation(lambda x, alpha: torch.sigmoid(x) * x, default_gain=math.sqrt(2)),
}


def activation_gain(act: str) -> float:
    """The default gain of ``act`` (what :func:`bias_act` uses when ``gain`` is None)."""
    return _activation(act).default_gain


def _activation(act: str) -> Activation:
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[act]


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, *, dim: int = 1, act: str = "linear",
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """``clamp(act(x + b) * gain, -clamp, clamp)``.

    Args:
        x: activations of any shape.
        b: 1-D bias broadcast along dimension ``dim`` of ``x``, or None for no bias.
        dim: the dimension of ``x`` that ``b`` runs along.
        act: activation name, a key of :data:`ACTIVATIONS`.
        alpha: slope parameter (the negative slope of ``lrelu``); None = the activation's default (0.2 for lrelu).
        gain: output scale; None = the activation's default (sqrt(2) for relu/lrelu/swish, else 1).
        clamp: clamp the result to ``[-clamp, clamp]``; None disables clamping.
    """
    spec = _activation(act)
    if clamp is not None and clamp < 0:
        raise ValueError(f"clamp must be >= 0 or None, got {clamp}")
    if b is not None:
        if b.ndim != 1 or not 0 <= dim < x.ndim or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias of shape {tuple(b.shape)} does not match dimension {dim} of x {tuple(x.shape)}")
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, float(spec.default_alpha if alpha is None else alpha))
    gain = spec.default_gain if gain is None else float(gain)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x
