"""StyleGAN2's modulated (and optionally demodulated) convolution."""
from __future__ import annotations

import torch

from .conv2d_resample import conv2d_resample
from .upfirdn2d import Padding


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *,
                     noise: torch.Tensor | None = None, up: int = 1, padding: Padding = 0,
                     resample_filter: torch.Tensor | None = None, demodulate: bool = True,
                     flip_weight: bool = True, fused: bool = True) -> torch.Tensor:
    """Convolve each sample with ``weight`` scaled per input channel by its style, then demodulate.

    For sample n the effective kernel is ``w[o, i] = weight[o, i] * styles[n, i]``, and demodulation divides
    output channel o by ``sqrt(sum_{i,k} w[o, i, k]^2 + 1e-8)``. ``noise`` is added after demodulation.

    Args:
        x: (B, C_in, H, W).
        weight: (C_out, C_in, kh, kw), already scaled as the caller wants (no equalized-lr gain is applied here).
        styles: (B, C_in) modulation coefficients.
        noise: tensor broadcastable to the output, e.g. (H', W') or (B, 1, H', W'); None for none.
        up, padding, resample_filter, flip_weight: as in :func:`~eg3d.ops.conv2d_resample.conv2d_resample`.
        demodulate: normalise each output channel's kernel to unit L2 norm.
        fused: True runs one grouped convolution with per-sample kernels; False scales the activations before
            and after a shared convolution. Both compute the same function (up to rounding).

    Returns:
        (B, C_out, H', W').
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"x {tuple(x.shape)} does not have the weight's {in_channels} input channels")
    if styles.shape != (batch, in_channels):
        raise ValueError(f"styles must have shape {(batch, in_channels)}, got {tuple(styles.shape)}")

    dcoefs = None
    if demodulate or fused:
        w = weight.unsqueeze(0) * styles.reshape(batch, 1, in_channels, 1, 1)  # (B, O, I, kh, kw)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # (B, O)

    if not fused:
        x = x * styles.to(x.dtype).reshape(batch, in_channels, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, padding=padding,
                            flip_weight=flip_weight)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(batch, out_channels, 1, 1)
        return x if noise is None else x + noise.to(x.dtype)

    if dcoefs is not None:
        w = w * dcoefs.reshape(batch, out_channels, 1, 1, 1)
    # Fold the batch into the channels: sample n is group n of one grouped convolution.
    x = x.reshape(1, batch * in_channels, *x.shape[2:])
    w = w.reshape(batch * out_channels, in_channels, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, padding=padding, groups=batch,
                        flip_weight=flip_weight)
    x = x.reshape(batch, out_channels, *x.shape[2:])
    return x if noise is None else x + noise.to(x.dtype)
