"""Small building blocks shared by the generator's networks."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from eg3d.ops.bias_act import ACTIVATIONS, bias_act


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalized learning rate, stored the way StyleGAN2 stores it.

    The stored weight is ``N(0, 1) / lr_multiplier``; the effective weight is ``weight * lr_multiplier / sqrt(in)``
    and the effective bias ``bias * lr_multiplier``. Activations follow StyleGAN2's bias_act: the activation is
    applied after the bias and scaled by its default gain (sqrt(2) for leaky ReLU with slope 0.2).

    Args:
        in_features, out_features: sizes of the input and output.
        bias: learn an additive bias.
        activation: a key of :data:`eg3d.ops.ACTIVATIONS` ('linear', 'lrelu', 'relu', 'softplus', ...).
        lr_multiplier: equalized-lr learning-rate multiplier (0.01 in the mapping network).
        bias_init: initial value of the stored bias (1 for the style affines).
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear":
            return F.linear(x, w, b)
        return bias_act(F.linear(x, w), b, dim=x.ndim - 1, act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"
