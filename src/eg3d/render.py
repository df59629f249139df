"""Render an EG3D generator: a grid of seeds x camera views (PNG) and an orbit video of some seeds (MP4).

    python -m eg3d.render                          # the default generator: a CPU is enough, nothing to download
    python -m eg3d.render ckpt=checkpoints/ffhq512 device=cuda render.seeds=[0,1,2,3,4,5]
    python -m eg3d.render generator=ffhq512 ckpt=ffhqrebalanced512-128.pkl render.image_mode=image_depth

Writes ``grid.png`` (one row per seed, one column per view) and ``orbit.mp4`` (the orbit seeds in a grid) into
the Hydra run folder (``outputs/render/runs/<date>/``, or ``out_dir=``). As in EG3D's ``gen_samples.py``, seed ``s``
gives ``z = np.random.RandomState(s).randn(z_dim)``, style codes are mapped with the frontal camera as condition
and rendered from the other cameras. What to render: ``conf/render/``; which generator: ``conf/generator/``;
``precision`` / ``compile``: the accelerated path of :mod:`eg3d.fast` (auto: the fastest within budget on CUDA).
"""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from eg3d.camera import FFHQ_FOCAL, orbit_labels
from eg3d.checkpoint import generator_from_config
from eg3d.frames import (IMAGE_MODES, NOISE_MODES, FrameRenderer, frontal_labels, more_depth_samples, seed_latents,
                         view_labels)
from texface.cli import hydra_command
from texface.device import resolve_device
from texface.errors import ConfigError
from texface.media import save_png
from texface.options import check_choice


def check_render_options(opts: dict) -> None:
    """Raise ConfigError naming the first invalid entry of a ``conf/render/`` config."""
    check_choice("render.image_mode", opts["image_mode"], IMAGE_MODES)
    check_choice("render.noise_mode", opts["noise_mode"], NOISE_MODES)
    if not opts["seeds"] or not all(isinstance(s, int) and s >= 0 for s in opts["seeds"]):
        raise ConfigError(f"render.seeds must be a non-empty list of non-negative ints, got {opts['seeds']}")
    if not all(isinstance(s, int) and s >= 0 for s in opts["orbit"]["seeds"]):
        raise ConfigError(f"render.orbit.seeds must be a list of non-negative ints, got {opts['orbit']['seeds']}")
    if not all(isinstance(v, list) and len(v) == 2 for v in opts["views"]):
        raise ConfigError(f"render.views must be a list of [yaw, pitch] pairs, got {opts['views']}")
    for key, value in (("batch_size", opts["batch_size"]), ("depth_mult", opts["depth_mult"]),
                       ("orbit.frames", opts["orbit"]["frames"]), ("orbit.fps", opts["orbit"]["fps"])):
        if not value > 0:
            raise ConfigError(f"render.{key} must be positive, got {value}")


def render(cfg: DictConfig) -> list[Path]:
    """Render what ``cfg.render`` asks for with ``cfg.generator``; returns the written files."""
    opts = OmegaConf.to_container(cfg.render, resolve=True)
    check_render_options(opts)
    device = resolve_device(cfg.device)
    if cfg.ckpt is not None:
        cfg.generator.ckpt = cfg.ckpt
    G = generator_from_config(cfg.generator).to(device)
    renderer = FrameRenderer(G, precision=cfg.precision, compile=cfg.compile, noise_mode=opts["noise_mode"],
                             deterministic=opts["deterministic"], batch_size=opts["batch_size"],
                             progress=cfg.progress)
    out_dir = Path(cfg.out_dir)
    written = []

    # Style codes are conditioned on the frontal camera, whatever camera renders them.
    frontal = frontal_labels(G, 1, device)

    def style_codes(seeds: list[int]) -> torch.Tensor:  # (N, num_ws, w_dim)
        z = seed_latents(seeds, G.z_dim).to(device)
        return G.mapping(z, frontal.expand(len(seeds), 25), truncation_psi=opts["truncation_psi"],
                         truncation_cutoff=opts["truncation_cutoff"])

    with torch.no_grad(), more_depth_samples(G, opts["depth_mult"]):
        grid = renderer.grid(style_codes(opts["seeds"]), view_labels(G, opts["views"]), image_mode=opts["image_mode"])
        written.append(save_png(grid, out_dir / "grid.png"))
        print(f"wrote {written[-1]}  ({len(opts['seeds'])} seeds x {len(opts['views'])} views, {opts['image_mode']})")
        orbit = opts["orbit"]
        if orbit["seeds"]:
            cameras = orbit_labels(orbit["frames"], yaw_range=orbit["yaw_range"], pitch_range=orbit["pitch_range"],
                                   radius=G.rendering_kwargs["avg_camera_radius"],
                                   pivot=G.rendering_kwargs["avg_camera_pivot"], focal=FFHQ_FOCAL)
            written += renderer.orbit_video(style_codes(orbit["seeds"]), out_dir / "orbit.mp4", fps=orbit["fps"],
                                            cameras=cameras, image_mode=opts["image_mode"])
            print(f"wrote {written[-1]}  ({orbit['frames']} frames at {orbit['fps']} fps, seeds {orbit['seeds']})")
    return written


main = hydra_command("render", render)

if __name__ == "__main__":
    main()
