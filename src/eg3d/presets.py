"""Named TriPlaneGenerator configurations: constructor kwargs (as official EG3D takes them) + render resolution.

- ``tiny``: the small random generator of the reference fixtures (128^2 output, SuperresolutionHybrid2X, 64^2
  neural rendering, 12+12 depth samples). Used by demos and tests that must run on a CPU in seconds.
- ``ffhq512``: the FFHQ 512^2 generator TEx-Face loads (its ``load_eg3d``; the same values as EG3D's
  ``train.py --cfg=ffhq``): 128^2 neural rendering, SuperresolutionHybrid8XDC, 48+48 depth samples,
  channel_base 32768 / channel_max 512. Its state dict is the official ffhqrebalanced512-128 ``G_ema``.

Keys such as ``density_reg`` or ``gpc_reg_prob`` are training-only; they are kept so the kwargs equal the
official ones.
"""
from __future__ import annotations

import copy

from texface.errors import ConfigError

PRESETS: dict[str, dict] = {
    "tiny": {
        "init_kwargs": {
            "z_dim": 512,
            "c_dim": 25,
            "w_dim": 512,
            "img_resolution": 128,
            "img_channels": 3,
            "sr_num_fp16_res": 0,
            "mapping_kwargs": {"num_layers": 2},
            "rendering_kwargs": {
                "image_resolution": 128,
                "disparity_space_sampling": False,
                "clamp_mode": "softplus",
                "c_gen_conditioning_zero": False,
                "gpc_reg_prob": 0.5,
                "c_scale": 1.0,
                "superresolution_noise_mode": "none",
                "density_reg": 0.25,
                "density_reg_p_dist": 0.004,
                "reg_type": "l1",
                "decoder_lr_mul": 1.0,
                "sr_antialias": True,
                "ray_start": 2.25,
                "ray_end": 3.3,
                "box_warp": 1,
                "avg_camera_radius": 2.7,
                "avg_camera_pivot": [0, 0, 0.2],
                "depth_resolution": 12,
                "depth_resolution_importance": 12,
                "superresolution_module": "training.superresolution.SuperresolutionHybrid2X",
            },
            "sr_kwargs": {"channel_base": 2048, "channel_max": 64, "fused_modconv_default": "inference_only"},
            "channel_base": 2048,
            "channel_max": 64,
            "fused_modconv_default": "inference_only",
            "num_fp16_res": 0,
            "conv_clamp": None,
        },
        "neural_rendering_resolution": 64,
    },
    "ffhq512": {
        "init_kwargs": {
            "z_dim": 512,
            "w_dim": 512,
            "mapping_kwargs": {"num_layers": 2},
            "channel_base": 32768,
            "channel_max": 512,
            "fused_modconv_default": "inference_only",
            "rendering_kwargs": {
                "depth_resolution": 48,
                "depth_resolution_importance": 48,
                "ray_start": 2.25,
                "ray_end": 3.3,
                "box_warp": 1,
                "avg_camera_radius": 2.7,
                "avg_camera_pivot": [0, 0, 0.2],
                "image_resolution": 512,
                "disparity_space_sampling": False,
                "clamp_mode": "softplus",
                "superresolution_module": "training.superresolution.SuperresolutionHybrid8XDC",
                "c_gen_conditioning_zero": False,
                "c_scale": 1.0,
                "superresolution_noise_mode": "none",
                "density_reg": 0.25,
                "density_reg_p_dist": 0.004,
                "reg_type": "l1",
                "decoder_lr_mul": 1.0,
                "sr_antialias": True,
            },
            "num_fp16_res": 0,
            "sr_num_fp16_res": 4,
            "sr_kwargs": {"channel_base": 32768, "channel_max": 512, "fused_modconv_default": "inference_only"},
            "conv_clamp": None,
            "c_dim": 25,
            "img_resolution": 512,
            "img_channels": 3,
        },
        "neural_rendering_resolution": 128,
    },
}


def preset(name: str) -> dict:
    """A fresh copy of preset ``name``: ``{'init_kwargs': {...}, 'neural_rendering_resolution': int}``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown generator preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
