"""EG3D's super-resolution heads: the neural render (R x R, 32 features + rgb) -> the final image.

Each head is two StyleGAN2 'skip' blocks (:class:`~eg3d.stylegan2.SynthesisBlock`) driven by the last style row
``ws[:, -1]`` repeated for all three layers of a block. If the render does not have the head's input resolution it
is first resized (bilinear, optionally antialiased).

| head | output | input | block0 | block1 |
|---|---|---|---|---|
| SuperresolutionHybrid2X | 128 | 64 (resized unless equal) | 64, no upsampling, 128 ch | 128, 64 ch |
| SuperresolutionHybrid4X | 256 | 128 (resized only if smaller) | 128, no upsampling, 128 ch | 256, 64 ch |
| SuperresolutionHybrid8X | 512 | 128 (resized unless equal) | 256, 128 ch | 512, 64 ch |
| SuperresolutionHybrid8XDC | 512 | 128 (resized unless equal) | 256, 256 ch | 512, 128 ch |

**The raw-image aliasing.** In official EG3D the generator passes ``rgb = feature_image[:, :3]`` (a view) to the
head, and the first block adds its toRGB output *in place* to the image it was given. When that block does not
upsample and no resize happened, the image it was given is that view, so the generator's ``image_raw`` comes back
as ``feature_image[:, :3] + toRGB(block0)``, not the clean render. Released EG3D models (and the reference fixtures)
report that value, so we reproduce it, deliberately and without mutating anything: ``forward`` returns
``(image, image_raw)`` where ``image_raw`` is exactly what the official ``rgb`` tensor holds after the call. For the
8X heads (block0 upsamples) and whenever a resize happens, ``image_raw`` is the clean ``rgb``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eg3d.ops import setup_filter
from eg3d.stylegan2 import SynthesisBlock


class _HybridSuperresolution(nn.Module):
    """Two SynthesisBlocks; subclasses fix the resolutions and channel counts (see the module table).

    Args:
        channels: feature channels of the render (32).
        img_resolution: output resolution; must equal the head's.
        sr_num_fp16_res: > 0 means the official head ran in fp16, which also turned on ``conv_clamp=256`` in its
            blocks. We always compute in float32 but keep the clamp, since it changes the result.
        sr_antialias: antialias the bilinear resize of the render.
        w_dim: style code size (the official heads hard-code 512).
        num_fp16_res, conv_clamp, channel_base, channel_max: accepted because official configs pass them; unused,
            exactly as in the official heads.
        **block_kwargs: keyword arguments of :class:`~eg3d.stylegan2.SynthesisBlock` (e.g. fused_modconv_default).
    """

    output_resolution: int
    input_resolution: int
    block_channels: tuple[int, int]  # output channels of block0 and block1
    block0_up: int
    resize_only_smaller: bool = False  # 4X resizes only renders below its input resolution
    has_resample_filter: bool = True  # every head but 8XDC registers an (unused) FIR buffer

    def __init__(self, channels: int, img_resolution: int, sr_num_fp16_res: int, sr_antialias: bool, *,
                 w_dim: int = 512, num_fp16_res: int = 4, conv_clamp: float | None = None,
                 channel_base: int | None = None, channel_max: int | None = None, **block_kwargs):
        super().__init__()
        if img_resolution != self.output_resolution:
            raise ValueError(f"{type(self).__name__} renders {self.output_resolution}^2 images, but "
                             f"img_resolution={img_resolution}; pick the head that matches the resolution")
        del num_fp16_res, conv_clamp, channel_base, channel_max  # ignored by the official heads too
        self.sr_antialias = sr_antialias
        clamp = 256 if sr_num_fp16_res > 0 else None
        mid, out = self.block_channels
        block0_resolution = self.input_resolution * self.block0_up
        self.block0 = SynthesisBlock(channels, mid, w_dim=w_dim, resolution=block0_resolution, img_channels=3,
                                     is_last=False, up=self.block0_up, conv_clamp=clamp, **block_kwargs)
        self.block1 = SynthesisBlock(mid, out, w_dim=w_dim, resolution=block0_resolution * 2, img_channels=3,
                                     is_last=True, conv_clamp=clamp, **block_kwargs)
        if self.has_resample_filter:
            self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, *, noise_mode: str = "random",
                fused_modconv: bool | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            rgb: (B, 3, R, R) raw image (the first 3 feature channels).
            x: (B, C, R, R) rendered features.
            ws: (B, num_ws, w_dim) style codes; only the last row is used.
            noise_mode: noise of the blocks' layers ('none' in every EG3D config).
            fused_modconv: see :class:`~eg3d.stylegan2.SynthesisBlock`.
        Returns:
            image (B, 3, S, S) and image_raw (B, 3, R, R): ``rgb``, or ``rgb`` plus block0's toRGB output where the
            official in-place add aliases it (see the module docstring).
        """
        ws = ws[:, -1:, :].repeat(1, 3, 1)  # (B, 3, w_dim)
        size = x.shape[-1]
        if self.resize_only_smaller and size > self.input_resolution:
            raise ValueError(f"{type(self).__name__} takes renders of at most {self.input_resolution}^2, "
                             f"got {size}^2; lower neural_rendering_resolution")
        resize = size < self.input_resolution if self.resize_only_smaller else size != self.input_resolution
        if resize:
            target = (self.input_resolution, self.input_resolution)
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=self.sr_antialias)
            rgb_in = F.interpolate(rgb, size=target, mode="bilinear", align_corners=False,
                                   antialias=self.sr_antialias)
        else:
            rgb_in = rgb
        block_kwargs = dict(noise_mode=noise_mode, fused_modconv=fused_modconv)
        x, img = self.block0(x, rgb_in, ws, **block_kwargs)
        # Official: block0 adds its toRGB output in place into the image it received. That is the caller's rgb
        # exactly when nothing was resized and block0 did not upsample (upsampling makes a new tensor first).
        image_raw = img if (not resize and self.block0_up == 1) else rgb
        _, img = self.block1(x, img, ws, **block_kwargs)
        return img, image_raw


class SuperresolutionHybrid2X(_HybridSuperresolution):
    """64^2 render -> 128^2 image."""
    output_resolution, input_resolution, block_channels, block0_up = 128, 64, (128, 64), 1


class SuperresolutionHybrid4X(_HybridSuperresolution):
    """128^2 render -> 256^2 image (smaller renders are upsampled to 128^2 first)."""
    output_resolution, input_resolution, block_channels, block0_up = 256, 128, (128, 64), 1
    resize_only_smaller = True


class SuperresolutionHybrid8X(_HybridSuperresolution):
    """128^2 render -> 512^2 image."""
    output_resolution, input_resolution, block_channels, block0_up = 512, 128, (128, 64), 2


class SuperresolutionHybrid8XDC(_HybridSuperresolution):
    """128^2 render -> 512^2 image, with twice the channels of 8X (the FFHQ-512 head)."""
    output_resolution, input_resolution, block_channels, block0_up = 512, 128, (256, 128), 2
    has_resample_filter = False


SUPERRESOLUTION_HEADS = {cls.__name__: cls for cls in (SuperresolutionHybrid2X, SuperresolutionHybrid4X,
                                                       SuperresolutionHybrid8X, SuperresolutionHybrid8XDC)}


def superresolution_class(module_path: str) -> type[_HybridSuperresolution]:
    """The head named by ``module_path``; official dotted paths (``training.superresolution.X``) are accepted."""
    name = str(module_path).rsplit(".", 1)[-1]
    if name not in SUPERRESOLUTION_HEADS:
        raise ValueError(f"unknown superresolution_module {module_path!r}; "
                         f"expected one of {sorted(SUPERRESOLUTION_HEADS)}")
    return SUPERRESOLUTION_HEADS[name]
