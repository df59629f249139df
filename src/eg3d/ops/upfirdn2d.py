"""FIR resampling of image batches: upsample, pad, filter, downsample (StyleGAN2's ``upfirdn2d``).

Plain PyTorch, any float dtype. The filter is applied as a true convolution (``flip_filter=False``) or as a
correlation (``flip_filter=True``); for the symmetric filters StyleGAN uses the two agree. Padding is given with
respect to the upsampled image as ``[x0, x1, y0, y1]`` (a single int pads all sides, a pair pads x and y); negative
padding crops.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

Padding = int | Sequence[int]


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """(x, y) from an int or a pair of ints."""
    if isinstance(value, int):
        return value, value
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair [x, y], got {value}")
    return value


def parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    """``[x0, x1, y0, y1]`` from an int, a pair ``[x, y]`` or four ints."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    if len(padding) != 4:
        raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding}")
    return padding


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a filter prepared by :func:`setup_filter`; None is the 1x1 identity."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"a FIR filter must be 1-D (separable) or 2-D, got shape {tuple(f.shape)}")
    return f.shape[-1], f.shape[0]


def setup_filter(f, *, normalize: bool = True, flip_filter: bool = False, gain: float = 1.0,
                 separable: bool | None = None, device=None) -> torch.Tensor:
    """Build a float32 FIR filter for :func:`upfirdn2d`.

    Args:
        f: taps as a list / array / tensor: 1-D (``[taps]``), 2-D (``[height, width]``), a scalar, or None
            (the identity ``[1]``).
        normalize: scale the taps to sum to 1, so a constant signal keeps its value.
        flip_filter: reverse the taps along every axis.
        gain: overall signal gain; each of the ``f.ndim`` axes carries ``gain ** (1 / ndim)`` of it, so a
            separable filter applied along x and y gives ``gain`` in total.
        separable: keep a 1-D filter separable. None (default) keeps it separable only when it has 8 or more
            taps; a short 1-D filter becomes its outer product (``[1, 3, 3, 1]`` -> a 4x4 filter).
        device: where to put the result.
    """
    f = torch.as_tensor(1.0 if f is None else f, dtype=torch.float32)
    if f.ndim == 0:
        f = f.reshape(1)
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"a FIR filter must be non-empty with at most 2 dimensions, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if separable and f.ndim != 1:
        raise ValueError("only a 1-D filter can be separable")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, *, up: int | Sequence[int] = 1,
              down: int | Sequence[int] = 1, padding: Padding = 0, flip_filter: bool = False,
              gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with the FIR filter ``f``, then keep every ``down``-th pixel.

    Args:
        x: (B, C, H, W) images.
        f: filter from :func:`setup_filter` (2-D, or 1-D applied along x then y), or None for the identity.
        up: integer upsampling factor, or ``[x, y]``: ``up - 1`` zeros follow every input pixel.
        down: integer downsampling factor, or ``[x, y]``.
        padding: zero padding (negative: cropping) of the upsampled image, ``[x0, x1, y0, y1]``.
        flip_filter: False applies ``f`` as a convolution, True as a correlation.
        gain: signal gain, spread over the filter's axes like in :func:`setup_filter`.

    Returns:
        (B, C, H', W') with ``W' = (W * up_x + x0 + x1 - f_w) // down_x + 1`` and likewise for H'.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects (B, C, H, W) images, got shape {tuple(x.shape)}")
    if f is None:
        f = torch.ones(1, 1, dtype=torch.float32, device=x.device)
    upx, upy = _pair(up, "up")
    downx, downy = _pair(down, "down")
    if min(upx, upy, downx, downy) < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    x0, x1, y0, y1 = parse_padding(padding)
    fw, fh = filter_size(f)
    batch, channels, height, width = x.shape
    if width * upx + x0 + x1 < fw or height * upy + y0 + y1 < fh:
        raise ValueError(f"the padded, upsampled image ({height * upy + y0 + y1}x{width * upx + x0 + x1}) is "
                         f"smaller than the {fh}x{fw} filter")

    # Zero insertion: each pixel is followed by up-1 zeros along each axis.
    x = x.reshape(batch, channels, height, 1, width, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(batch, channels, height * upy, width * upx)

    # Pad (positive) and crop (negative).
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]

    # FIR: conv2d correlates, so a true convolution needs the flipped filter. One depthwise pass per axis for
    # a separable filter, one 2-D pass otherwise.
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].expand(channels, 1, fh, fw), groups=channels)
    else:
        x = F.conv2d(x, f[None, None, None, :].expand(channels, 1, 1, fw), groups=channels)
        x = F.conv2d(x, f[None, None, :, None].expand(channels, 1, fw, 1), groups=channels)

    return x[:, :, ::downy, ::downx]


def filter2d(x: torch.Tensor, f: torch.Tensor | None, *, padding: Padding = 0, flip_filter: bool = False,
             gain: float = 1.0) -> torch.Tensor:
    """Filter with ``f`` keeping the image size; ``padding`` adds to (or crops) the output on top of that."""
    x0, x1, y0, y1 = parse_padding(padding)
    fw, fh = filter_size(f)
    pad = [x0 + fw // 2, x1 + (fw - 1) // 2, y0 + fh // 2, y1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain)


def upsample2d(x: torch.Tensor, f: torch.Tensor | None, *, up: int | Sequence[int] = 2, padding: Padding = 0,
               flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Upsample by ``up`` with the FIR filter ``f``: (B, C, H, W) -> (B, C, H*up, W*up) for zero ``padding``.

    The gain is multiplied by ``up_x * up_y`` to make up for the inserted zeros.
    """
    upx, upy = _pair(up, "up")
    x0, x1, y0, y1 = parse_padding(padding)
    fw, fh = filter_size(f)
    pad = [x0 + (fw + upx - 1) // 2, x1 + (fw - upx) // 2, y0 + (fh + upy - 1) // 2, y1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=pad, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(x: torch.Tensor, f: torch.Tensor | None, *, down: int | Sequence[int] = 2,
                 padding: Padding = 0, flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Low-pass with ``f`` and downsample by ``down``: (B, C, H, W) -> (B, C, H/down, W/down) for zero padding."""
    downx, downy = _pair(down, "down")
    x0, x1, y0, y1 = parse_padding(padding)
    fw, fh = filter_size(f)
    pad = [x0 + (fw - downx + 1) // 2, x1 + (fw - downx) // 2, y0 + (fh - downy + 1) // 2, y1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=pad, flip_filter=flip_filter, gain=gain)
