"""2-D convolution fused with FIR upsampling (StyleGAN2's ``conv2d_resample``, the up/no-resampling cases)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .upfirdn2d import Padding, filter_size, parse_padding, upfirdn2d


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, *, f: torch.Tensor | None = None, up: int = 1,
                    padding: Padding = 0, groups: int = 1, flip_weight: bool = True) -> torch.Tensor:
    """Convolve ``x`` with ``w``, optionally upsampling by ``up`` with the FIR filter ``f`` first.

    Defined as ``conv(upfirdn2d(x, f, up=up, padding=p, gain=up**2), w)`` with an unpadded ("valid") conv, where
    ``p`` is ``padding`` plus what :func:`~eg3d.ops.upfirdn2d.upsample2d` adds for the filter. Padding is applied
    once, to the upsampled image. The upsampling case runs as a strided transposed convolution followed by the
    FIR filter, which is the same linear map at a quarter of the cost.

    Args:
        x: (B, C_in, H, W).
        w: (C_out, C_in // groups, kh, kw), same dtype as ``x``.
        f: FIR filter from ``setup_filter`` (used only when ``up > 1``).
        up: integer upsampling factor.
        padding: padding of the upsampled image, int or ``[x0, x1, y0, y1]``.
        groups: grouped convolution, as in ``torch.nn.functional.conv2d``.
        flip_weight: True correlates with ``w`` (like ``conv2d``), False convolves (``w`` flipped spatially).
    """
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"expected x (B, C, H, W) and w (O, I, kh, kw), got {tuple(x.shape)} and {tuple(w.shape)}")
    if not isinstance(up, int) or up < 1:
        raise ValueError(f"up must be an int >= 1, got {up!r}")
    out_channels, in_per_group, kh, kw = w.shape
    x0, x1, y0, y1 = parse_padding(padding)

    if up == 1:
        if not flip_weight:
            w = w.flip([2, 3])
        if x0 == x1 and y0 == y1 and x0 >= 0 and y0 >= 0:
            return F.conv2d(x, w, padding=(y0, x0), groups=groups)
        return F.conv2d(upfirdn2d(x, None, padding=[x0, x1, y0, y1]), w, groups=groups)

    fw, fh = filter_size(f)
    x0 += (fw + up - 1) // 2
    x1 += (fw - up) // 2
    y0 += (fh + up - 1) // 2
    y1 += (fh - up) // 2

    # conv_transpose2d scatters each input pixel through the kernel, i.e. it truly convolves the zero-inserted
    # input with its weight; a correlation with w therefore needs w flipped. Its weight layout is
    # (C_in, C_out // groups, kh, kw).
    if flip_weight:
        w = w.flip([2, 3])
    w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
    w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)

    # The transposed conv produces the full convolution; the FIR pass then pads/crops it to the requested window.
    # Where both sides need cropping, let the transposed conv crop the common part.
    x0 -= kw - 1
    x1 -= kw - up
    y0 -= kh - 1
    y1 -= kh - up
    crop_x = max(min(-x0, -x1), 0)
    crop_y = max(min(-y0, -y1), 0)
    x = F.conv_transpose2d(x, w, stride=up, padding=(crop_y, crop_x), groups=groups)
    return upfirdn2d(x, f, padding=[x0 + crop_x, x1 + crop_x, y0 + crop_y, y1 + crop_y], gain=up ** 2)
