"""StyleGAN2 mapping and synthesis networks, as EG3D uses them for its tri-plane backbone and super-resolution.

Parameter and buffer names follow the official code, so official state dicts load with ``strict=True``. Everything
runs in float32: the official fp16 switches (``num_fp16_res``, ``use_fp16``, ``fp16_channels_last``) are accepted so
official configs construct these modules, and have no effect. ``conv_clamp`` does change results (the output of
every conv is clamped to +-conv_clamp) and is honoured.

Style codes: the backbone consumes ``ws`` (B, num_ws, w_dim), one row per conv and toRGB layer. Block ``b{res}``
reads rows ``[k, k + num_conv + num_torgb)`` where ``k`` counts the conv layers of the blocks before it, so each
block's toRGB shares its row with the next block's first conv.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from eg3d.layers import FullyConnectedLayer
from eg3d.ops import activation_gain, bias_act, modulated_conv2d, setup_filter, upsample2d

NOISE_MODES = ("random", "const", "none")
FUSED_MODCONV_CHOICES = (True, False, "inference_only")


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit root-mean-square along ``dim``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z, c -> w: RMS-normalised z and label embedding, concatenated, through an MLP; broadcast to ``num_ws`` rows.

    Args:
        z_dim: latent size (0 = no latent).
        c_dim: conditioning label size (0 = no label).
        w_dim: output size.
        num_ws: rows of the broadcast output, None = return (B, w_dim).
        num_layers: number of FC layers (EG3D uses 2).
        embed_features: size of the label embedding; None = w_dim.
        layer_features: hidden width; None = w_dim.
        activation: activation of the FC layers.
        lr_multiplier: equalized-lr multiplier of the FC layers (not of the embedding).
        w_avg_beta: decay of the running mean ``w_avg`` (updated with ``update_emas=True``); None = no ``w_avg``.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, *, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None, activation: str = "lrelu",
                 lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.998):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim > 0 else 0
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1, truncation_cutoff: int | None = None,
                update_emas: bool = False) -> torch.Tensor:
        """
        Args:
            z: (B, z_dim) latents.
            c: (B, c_dim) labels.
            truncation_psi: w <- w_avg + psi * (w - w_avg); 1 = no truncation.
            truncation_cutoff: truncate only rows [0, cutoff); None = all rows.
            update_emas: move ``w_avg`` toward this batch's mean w (training).
        Returns:
            (B, num_ws, w_dim), or (B, w_dim) when num_ws is None.
        """
        parts = []
        if self.z_dim > 0:
            _check_shape(z, (None, self.z_dim), "z")
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            _check_shape(c, (None, self.c_dim), "c")
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1)  # (B, z_dim + embed_features)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)  # (B, w_dim) at the end

        if update_emas:
            if self.w_avg_beta is None:
                raise ValueError("update_emas=True needs a mapping network with w_avg (w_avg_beta is None)")
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # (B, num_ws, w_dim)

        if truncation_psi != 1:
            if not hasattr(self, "w_avg"):
                raise ValueError("truncation needs w_avg, which this mapping network does not track")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = torch.cat([self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi),
                               x[:, truncation_cutoff:]], dim=1)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally upsampling 2x) + per-pixel noise + bias + leaky ReLU.

    Args:
        in_channels, out_channels: channel counts.
        w_dim: size of the style code the affine reads.
        resolution: output resolution (the noise map's size).
        kernel_size: conv kernel size.
        up: 1, or 2 to upsample with the FIR filter before the conv.
        use_noise: add ``noise_strength``-scaled noise (buffer ``noise_const`` for noise_mode 'const').
        activation: bias_act activation (with its default gain).
        resample_filter: FIR taps for upsampling.
        conv_clamp: clamp the output to +-conv_clamp; None = no clamp.
    """

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu",
                 resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.padding = kernel_size // 2
        self.act_gain = activation_gain(activation)
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, noise_mode: str = "random", fused_modconv: bool = True,
                gain: float = 1) -> torch.Tensor:
        """x (B, in_channels, resolution/up, resolution/up), w (B, w_dim) -> (B, out_channels, resolution, resolution).

        noise_mode: 'random' draws fresh N(0, 1) noise per sample, 'const' uses ``noise_const``, 'none' adds none.
        """
        _check_choice(noise_mode, NOISE_MODES, "noise_mode")
        in_resolution = self.resolution // self.up
        _check_shape(x, (None, self.in_channels, in_resolution, in_resolution), "SynthesisLayer input")
        styles = self.affine(w)  # (B, in_channels)

        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device,
                                dtype=x.dtype) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength

        # An upsampling conv is a true convolution in StyleGAN2 (weights flipped); the others correlate.
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1), fused=fused_modconv)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, "
                f"resolution={self.resolution}, up={self.up}, activation={self.activation}")


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation, + bias: features -> image channels.

    Args:
        in_channels, out_channels: channel counts.
        w_dim: size of the style code.
        kernel_size: conv kernel size.
        conv_clamp: clamp the output to +-conv_clamp; None = no clamp.
    """

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        # Without demodulation the equalized-lr gain has to be applied explicitly; it goes into the styles.
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, fused_modconv: bool = True) -> torch.Tensor:
        """x (B, in_channels, H, W), w (B, w_dim) -> (B, out_channels, H, W)."""
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, padding=self.weight.shape[-1] // 2, demodulate=False,
                             fused=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}"


class SynthesisBlock(nn.Module):
    """One resolution of a 'skip' StyleGAN2 generator: [const |] conv0, conv1, toRGB, and the running image.

    With ``up=2`` (the standard block) the features and the incoming image are upsampled 2x; with ``up=1`` they
    keep their resolution (EG3D's ``SynthesisBlockNoUp``, the first block of the 2X/4X super-resolution heads).
    Parameters: ``const`` (first block only), ``conv0`` (not in the first block), ``conv1``, ``torgb``, and the
    FIR buffer ``resample_filter``.

    Args:
        in_channels: input feature channels; 0 = first block, which starts from the learned ``const``.
        out_channels: feature channels of this block.
        w_dim: style code size.
        resolution: this block's output resolution.
        img_channels: channels of the image the toRGB layers build.
        is_last: the last block of its network (kept for the official signature; every 'skip' block has a toRGB).
        up: 2 (upsample) or 1 (keep the resolution).
        architecture: only 'skip' (the one EG3D uses).
        resample_filter: FIR taps for upsampling.
        conv_clamp: clamp conv outputs to +-conv_clamp; None = no clamp. StyleGAN2's default is 256.
        use_fp16, fp16_channels_last: accepted for official configs; ignored (always float32).
        fused_modconv_default: True, False, or 'inference_only' (fused in eval mode, unfused in training).
        kernel_size, use_noise, activation: passed to the SynthesisLayers.
    """

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, up: int = 2, architecture: str = "skip",
                 resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = 256,
                 use_fp16: bool = False, fp16_channels_last: bool = False,
                 fused_modconv_default: bool | str = True, kernel_size: int = 3, use_noise: bool = True,
                 activation: str = "lrelu"):
        super().__init__()
        _check_choice(architecture, ("skip",), "architecture")
        _check_choice(up, (1, 2), "up")
        _check_choice(fused_modconv_default, FUSED_MODCONV_CHOICES, "fused_modconv_default")
        del use_fp16, fp16_channels_last  # float32 only
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.resolution, self.img_channels, self.is_last = resolution, img_channels, is_last
        self.up, self.architecture = up, architecture
        self.fused_modconv_default = fused_modconv_default
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        layer_kwargs = dict(w_dim=w_dim, resolution=resolution, kernel_size=kernel_size, use_noise=use_noise,
                            activation=activation, resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.num_conv = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=up, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, **layer_kwargs)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_torgb = 1

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, *,
                noise_mode: str = "random", fused_modconv: bool | str | None = None):
        """
        Args:
            x: (B, in_channels, resolution/up, resolution/up) features; None for the first block.
            img: (B, img_channels, resolution/up, resolution/up) image so far, or None.
            ws: (B, num_conv + num_torgb, w_dim) this block's style rows.
            noise_mode: 'random', 'const' or 'none'.
            fused_modconv: override ``fused_modconv_default`` (True, False or 'inference_only').
        Returns:
            x (B, out_channels, resolution, resolution) and img (B, img_channels, resolution, resolution). The
            returned image is a new tensor; ``img`` is never modified in place.
        """
        _check_shape(ws, (None, self.num_conv + self.num_torgb, self.w_dim), "block ws")
        fused_modconv = self.fused_modconv_default if fused_modconv is None else fused_modconv
        _check_choice(fused_modconv, FUSED_MODCONV_CHOICES, "fused_modconv")
        if fused_modconv == "inference_only":
            fused_modconv = not self.training
        w_iter = iter(ws.to(torch.float32).unbind(dim=1))
        in_resolution = self.resolution // self.up

        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)  # (B, out_channels, 4, 4)
        else:
            _check_shape(x, (None, self.in_channels, in_resolution, in_resolution), "block features")
            x = self.conv0(x.to(torch.float32), next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)

        if img is not None:
            _check_shape(img, (None, self.img_channels, in_resolution, in_resolution), "block image")
            if self.up == 2:
                img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
        img = y if img is None else img + y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, up={self.up}, architecture={self.architecture}"


class SynthesisNetwork(nn.Module):
    """ws -> image: 'skip' SynthesisBlocks from 4x4 up to ``img_resolution``.

    Args:
        w_dim: style code size.
        img_resolution: output resolution (a power of two >= 4).
        img_channels: output channels (96 = 3 x 32 tri-plane features in EG3D).
        channel_base, channel_max: block ``b{res}`` has ``min(channel_base // res, channel_max)`` channels.
        num_fp16_res: accepted for official configs; ignored (always float32).
        **block_kwargs: keyword arguments of :class:`SynthesisBlock` (conv_clamp, fused_modconv_default, ...).
    """

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, *, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 4, **block_kwargs):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        del num_fp16_res  # float32 only
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last, **block_kwargs)
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def forward(self, ws: torch.Tensor, *, noise_mode: str = "random",
                fused_modconv: bool | str | None = None) -> torch.Tensor:
        """ws (B, num_ws, w_dim) -> image (B, img_channels, img_resolution, img_resolution)."""
        _check_shape(ws, (None, self.num_ws, self.w_dim), "ws")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            x, img = block(x, img, block_ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
            w_idx += block.num_conv
        return img

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}")


class StyleGAN2Backbone(nn.Module):
    """Mapping + synthesis network (the official ``Generator``; EG3D's ``backbone``).

    Args:
        z_dim, c_dim, w_dim: latent, label and style sizes.
        img_resolution, img_channels: output of the synthesis network.
        mapping_kwargs: keyword arguments of :class:`MappingNetwork`.
        **synthesis_kwargs: keyword arguments of :class:`SynthesisNetwork`.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int, *,
                 mapping_kwargs: dict | None = None, **synthesis_kwargs):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **(mapping_kwargs or {}))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_emas: bool = False, **synthesis_kwargs) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, **synthesis_kwargs)


def _check_shape(x: torch.Tensor | None, shape: tuple, name: str) -> None:
    """Raise ValueError unless ``x`` has ``shape`` (None entries match any size)."""
    if x is None or x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        got = None if x is None else tuple(x.shape)
        want = tuple("*" if s is None else s for s in shape)
        raise ValueError(f"{name} must have shape {want}, got {got}")


def _check_choice(value, choices: tuple, name: str) -> None:
    if not any(value == c and type(value) is type(c) for c in choices):
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
