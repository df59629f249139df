"""EG3D's TriPlaneGenerator: style codes -> tri-planes -> volume render -> super-resolved image.

Pipeline (shapes for the FFHQ-512 model, B = batch, R = neural_rendering_resolution, S = img_resolution):

    z (B,512), c (B,25) --mapping--> ws (B,14,512)
    ws --backbone.synthesis--> planes (B,96,256,256) viewed as (B,3,32,256,256)               [planes]
    c --ray_sampler--> rays (B,R*R,3) x2 --renderer(planes, decoder)--> feature_image (B,32,R,R), depth, weights
    feature_image, ws[:, -1] --superresolution--> image (B,3,S,S)                            [render_planes]

``synthesis(ws, c)`` is ``render_planes(planes(ws), ws, c)``; the planes do not depend on the camera, so a video
of fixed style codes computes them once and calls ``render_planes`` per frame. :mod:`eg3d.fast` holds the
accelerated (CUDA, reduced precision and/or compiled) variant of these methods. The class knows no file format:
:mod:`eg3d.checkpoint` saves and loads it.

Same constructor arguments, parameter names and buffers as the official class, so official ``G_ema`` weights load
with ``strict=True`` and official init kwargs construct it. Deliberate differences: everything runs in float32 (fp16
settings are accepted and ignored, ``conv_clamp`` is honoured); ``synthesis`` also returns the clean
``feature_image``, ``weights_sum`` and the ``planes``; passing ``neural_rendering_resolution`` to ``synthesis`` does
not change the generator's default (the official one stores it); and ``deterministic=True`` renders without random
depth jitter (see :mod:`eg3d.renderer`). ``image_raw`` reproduces the official value, including its in-place aliasing
(see :mod:`eg3d.superresolution`).
"""
from __future__ import annotations

import copy
import json

import torch
from torch import nn

from eg3d.camera import split_labels
from eg3d.renderer import ImportanceRenderer, OSGDecoder, RaySampler
from eg3d.stylegan2 import StyleGAN2Backbone
from eg3d.superresolution import superresolution_class

PLANE_CHANNELS = 32  # features per plane; the backbone renders 3 * 32 channels
PLANE_RESOLUTION = 256
# rendering_kwargs entries the generator itself reads (the renderer checks its own).
REQUIRED_RENDERING_KWARGS = ("superresolution_module", "sr_antialias", "c_gen_conditioning_zero",
                             "superresolution_noise_mode")


class TriPlaneGenerator(nn.Module):
    """EG3D generator.

    Args:
        z_dim, c_dim, w_dim: latent (512), camera label (25) and style (512) sizes.
        img_resolution: size of the final image (the super-resolution head must produce it).
        img_channels: channels of the final image; must be 3.
        sr_num_fp16_res: official fp16 switch of the super-resolution head; > 0 also turns on its conv clamp (256),
            which we keep (computation stays float32).
        mapping_kwargs: keyword arguments of :class:`~eg3d.stylegan2.MappingNetwork` (e.g. ``{'num_layers': 2}``).
        rendering_kwargs: the official rendering dict: ``superresolution_module`` (class name, or the official
            dotted path), ``sr_antialias``, ``c_gen_conditioning_zero``, ``c_scale``, ``superresolution_noise_mode``,
            ``decoder_lr_mul``, and the renderer's ``ray_start``, ``ray_end``, ``box_warp``, ``depth_resolution``,
            ``depth_resolution_importance``, ``clamp_mode``, ... Training-only entries are kept but unused.
        sr_kwargs: extra keyword arguments of the super-resolution head (``channel_base``/``channel_max`` are
            ignored like in the official heads; ``fused_modconv_default`` reaches its blocks).
        **synthesis_kwargs: keyword arguments of :class:`~eg3d.stylegan2.SynthesisNetwork` (``channel_base``,
            ``channel_max``, ``num_fp16_res``, ``conv_clamp``, ``fused_modconv_default``, ...).
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 sr_num_fp16_res: int = 0, mapping_kwargs: dict | None = None, rendering_kwargs: dict | None = None,
                 sr_kwargs: dict | None = None, **synthesis_kwargs):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        rendering_kwargs = dict(rendering_kwargs or {})
        sr_kwargs = dict(sr_kwargs or {})
        missing = [key for key in REQUIRED_RENDERING_KWARGS if key not in rendering_kwargs]
        if missing:
            raise ValueError(f"rendering_kwargs lacks {missing}; pass the official EG3D rendering_kwargs "
                             f"(see the fixtures' meta.json G_kwargs for an example)")
        if img_channels != 3:
            raise ValueError(f"img_channels must be 3 (the super-resolution heads output RGB), got {img_channels}")
        self.init_kwargs = _plain_data(dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
            sr_num_fp16_res=sr_num_fp16_res, mapping_kwargs=mapping_kwargs, rendering_kwargs=rendering_kwargs,
            sr_kwargs=sr_kwargs, **synthesis_kwargs))
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.rendering_kwargs = copy.deepcopy(rendering_kwargs)
        self.neural_rendering_resolution = 64

        self.renderer = ImportanceRenderer()
        self.ray_sampler = RaySampler()
        self.backbone = StyleGAN2Backbone(z_dim, c_dim, w_dim, PLANE_RESOLUTION, 3 * PLANE_CHANNELS,
                                          mapping_kwargs=mapping_kwargs, **synthesis_kwargs)
        head = superresolution_class(rendering_kwargs["superresolution_module"])
        self.superresolution = head(PLANE_CHANNELS, img_resolution, sr_num_fp16_res,
                                    rendering_kwargs["sr_antialias"], w_dim=w_dim, **sr_kwargs)
        self.decoder = OSGDecoder(PLANE_CHANNELS, decoder_lr_mul=rendering_kwargs.get("decoder_lr_mul", 1),
                                  decoder_output_dim=PLANE_CHANNELS)

    @property
    def num_ws(self) -> int:
        return self.backbone.num_ws

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        """z (B, z_dim), c (B, c_dim) -> ws (B, num_ws, w_dim).

        The label is zeroed when ``c_gen_conditioning_zero`` and scaled by ``c_scale`` (the official default for a
        missing ``c_scale`` is 0, i.e. no conditioning; EG3D configs always set it). Truncation:
        ``w_avg + psi * (w - w_avg)`` on rows ``[0, truncation_cutoff)`` (all rows when None).
        """
        if self.rendering_kwargs["c_gen_conditioning_zero"]:
            c = torch.zeros_like(c)
        c = c * self.rendering_kwargs.get("c_scale", 0)
        return self.backbone.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                                     update_emas=update_emas)

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, neural_rendering_resolution: int | None = None,
                  noise_mode: str = "random", deterministic: bool = False, *,
                  fused_modconv: bool | str | None = None) -> dict[str, torch.Tensor]:
        """Render style codes from cameras: ``render_planes(planes(ws), ws, c)``.

        Args:
            ws: (B, num_ws, w_dim) style codes.
            c: (B, 25) camera labels (16 cam2world entries row-major, 9 normalized intrinsics).
            neural_rendering_resolution: R; None = ``self.neural_rendering_resolution``.
            noise_mode: backbone noise, 'random' | 'const' | 'none' (the super-resolution head always uses
                ``rendering_kwargs['superresolution_noise_mode']``, as in EG3D).
            deterministic: render without random depth samples (reproducible); default samples like EG3D.
            fused_modconv: override the blocks' ``fused_modconv_default`` (True, False, 'inference_only').
        Returns:
            {'image' (B,3,S,S), 'image_raw' (B,3,R,R), 'image_depth' (B,1,R,R), 'feature_image' (B,32,R,R),
             'weights_sum' (B,1,R,R), 'planes' (B,3,32,256,256)}.
        """
        self._check_inputs(ws, c)  # before the backbone runs
        planes = self.planes(ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
        return self.render_planes(planes, ws, c, neural_rendering_resolution=neural_rendering_resolution,
                                  deterministic=deterministic, fused_modconv=fused_modconv)

    def planes(self, ws: torch.Tensor, noise_mode: str = "random", *,
               fused_modconv: bool | str | None = None) -> torch.Tensor:
        """The tri-planes of style codes: ws (B, num_ws, w_dim) -> (B, 3, 32, 256, 256).

        They depend on ``ws`` alone, not on the camera: compute them once and pass them to
        :meth:`render_planes` for every camera of an orbit. Channel 32k + f of the backbone output is feature f
        of plane k. ``noise_mode`` and ``fused_modconv`` as in :meth:`synthesis`.
        """
        self._check_inputs(ws)
        planes = self.backbone.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
        return planes.view(planes.shape[0], 3, PLANE_CHANNELS, planes.shape[-2], planes.shape[-1])

    def render_planes(self, planes: torch.Tensor, ws: torch.Tensor, c: torch.Tensor, *,
                      neural_rendering_resolution: int | None = None, deterministic: bool = False,
                      fused_modconv: bool | str | None = None,
                      renderer: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """Volume-render tri-planes from cameras and super-resolve the render.

        Args:
            planes: (B, 3, 32, H, W) from :meth:`planes` (of these ``ws``).
            ws: (B, num_ws, w_dim) style codes; the super-resolution head reads ``ws[:, -1]``.
            c: (B, 25) camera labels.
            neural_rendering_resolution, deterministic, fused_modconv: as in :meth:`synthesis`.
            renderer: a module with :class:`~eg3d.renderer.ImportanceRenderer`'s ``forward`` to use instead of
                ``self.renderer`` (:mod:`eg3d.fast` passes its accelerated one).
        Returns:
            the dict of :meth:`synthesis`; its 'planes' is ``planes``.
        """
        self._check_inputs(ws, c)
        batch = ws.shape[0]
        if planes.ndim != 5 or planes.shape[:3] != (batch, 3, PLANE_CHANNELS):
            raise ValueError(f"planes must be (B, 3, {PLANE_CHANNELS}, H, W) with B={batch} (from "
                             f"TriPlaneGenerator.planes(ws)), got {tuple(planes.shape)}")
        resolution = self.neural_rendering_resolution if neural_rendering_resolution is None \
            else neural_rendering_resolution
        cam2world, intrinsics = split_labels(c)
        ray_origins, ray_directions = self.ray_sampler(cam2world, intrinsics, resolution)  # (B, R*R, 3) each

        renderer = self.renderer if renderer is None else renderer
        features, depth, weights_sum = renderer(planes, self.decoder, ray_origins, ray_directions,
                                                self.rendering_kwargs, deterministic=deterministic)

        feature_image = features.permute(0, 2, 1).reshape(batch, -1, resolution, resolution).contiguous()
        depth_image = depth.permute(0, 2, 1).reshape(batch, 1, resolution, resolution)
        weights_image = weights_sum.permute(0, 2, 1).reshape(batch, 1, resolution, resolution)

        image, image_raw = self.superresolution(
            feature_image[:, :3], feature_image, ws, noise_mode=self.rendering_kwargs["superresolution_noise_mode"],
            fused_modconv=fused_modconv)
        return {"image": image, "image_raw": image_raw, "image_depth": depth_image, "feature_image": feature_image,
                "weights_sum": weights_image, "planes": planes}

    def sample_mixed(self, coordinates: torch.Tensor, directions: torch.Tensor, ws: torch.Tensor,
                     noise_mode: str = "random", *, fused_modconv: bool | str | None = None) -> dict[str, torch.Tensor]:
        """Density and features of the field of ``ws`` at points.

        Args:
            coordinates: (B, M, 3) world points; directions: (B, M, 3) view directions (unused by the decoder).
            ws: (B, num_ws, w_dim); noise_mode, fused_modconv: as in :meth:`synthesis`.
        Returns:
            {'sigma': (B, M, 1) raw density, 'rgb': (B, M, 32) features}.
        """
        planes = self.planes(ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
        return self.renderer.run_model(planes, self.decoder, coordinates, directions, self.rendering_kwargs)

    def sample(self, coordinates: torch.Tensor, directions: torch.Tensor, z: torch.Tensor, c: torch.Tensor,
               truncation_psi: float = 1, truncation_cutoff: int | None = None, noise_mode: str = "random", *,
               fused_modconv: bool | str | None = None) -> dict[str, torch.Tensor]:
        """:meth:`sample_mixed` for the style codes ``mapping(z, c, truncation_psi, truncation_cutoff)``."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.sample_mixed(coordinates, directions, ws, noise_mode, fused_modconv=fused_modconv)

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_emas: bool = False,
                **synthesis_kwargs) -> dict[str, torch.Tensor]:
        """``synthesis(mapping(z, c, ...), c, **synthesis_kwargs)``; c is both the condition and the camera."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, c, **synthesis_kwargs)

    def _check_inputs(self, ws: torch.Tensor, c: torch.Tensor | None = None) -> None:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be (B, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        if c is not None and c.shape != (ws.shape[0], 25):
            raise ValueError(f"c must be (B, 25) camera labels with B={ws.shape[0]}, got {tuple(c.shape)}")


def _plain_data(kwargs: dict) -> dict:
    """A JSON round-trip copy of the constructor arguments (tuples become lists); refuse what JSON cannot hold."""
    try:
        return json.loads(json.dumps(kwargs))
    except (TypeError, ValueError) as err:
        raise ValueError(f"TriPlaneGenerator arguments must be plain JSON data (numbers, strings, lists, dicts): "
                         f"{err}") from None
