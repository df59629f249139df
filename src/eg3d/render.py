"""Render an EG3D generator: a grid of seeds x camera views (PNG) and an orbit video of some seeds (MP4).

    python -m eg3d.render                          # the tiny random generator: a CPU is enough, nothing to download
    python -m eg3d.render ckpt=checkpoints/ffhq512 device=cuda render.seeds=[0,1,2,3,4,5]
    python -m eg3d.render generator=ffhq512 ckpt=ffhqrebalanced512-128.pkl render.image_mode=image_depth

Writes ``grid.png`` (one row per seed, one column per view) and ``orbit.mp4`` (the orbit seeds side by side) into
the Hydra run folder (``outputs/render/runs/<date>/``, or ``out_dir=``). As in EG3D's ``gen_samples.py``, seed ``s``
gives ``z = np.random.RandomState(s).randn(z_dim)``, style codes are mapped with the frontal camera as condition
and rendered from the other cameras. What to render: ``conf/render/``; which generator: ``conf/generator/``.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from eg3d.camera import FFHQ_FOCAL, LookAtPoseSampler, camera_labels, intrinsics_from_focal, orbit_labels
from eg3d.checkpoint import CheckpointError, first_line
from eg3d.video import save_png, tile, to_uint8, write_mp4

IMAGE_MODES = ("image", "image_depth", "image_raw")
NOISE_MODES = ("const", "random", "none")


def seed_latents(seeds: list[int], z_dim: int) -> torch.Tensor:
    """Latents (N, z_dim) of the official scripts: ``np.random.RandomState(seed).randn(z_dim)`` per seed."""
    return torch.from_numpy(np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds])).float()


def view_labels(G, views: list[tuple[float, float]]) -> torch.Tensor:
    """Camera labels (V, 25) at [yaw, pitch] offsets (radians) from the frontal pose, on the generator's sphere."""
    yaw = torch.tensor([math.pi / 2 + v[0] for v in views])
    pitch = torch.tensor([math.pi / 2 + v[1] for v in views])
    cam2world = LookAtPoseSampler.sample(yaw, pitch, G.rendering_kwargs["avg_camera_pivot"],
                                         radius=G.rendering_kwargs["avg_camera_radius"], batch_size=len(views))
    return camera_labels(cam2world, intrinsics_from_focal(FFHQ_FOCAL))


def frontal_labels(G, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Labels (n, 25) of the frontal camera (yaw = pitch = pi/2) on the generator's camera sphere (for FFHQ: pivot
    (0, 0, 0.2), radius 2.7) with the FFHQ focal length, the camera the official infer.py renders from."""
    return view_labels(G, [(0.0, 0.0)]).to(device).expand(n, 25)


@torch.no_grad()
def render_uint8(G, ws: torch.Tensor, c: torch.Tensor, *, image_mode: str, noise_mode: str,
                 deterministic: bool, planes: torch.Tensor | None = None) -> np.ndarray:
    """Render style codes ws (B, num_ws, w_dim) from cameras c (B, 25) -> uint8 (B, H, W, 3).

    ``planes``: the tri-planes ``G.planes(ws, noise_mode)`` when already computed (then ``noise_mode`` is unused).
    ``image_depth`` is shown like EG3D's gen_videos: negated (near = bright) and min-max scaled per image.
    """
    if planes is None:
        out = G.synthesis(ws, c, noise_mode=noise_mode, deterministic=deterministic)
    else:
        out = G.render_planes(planes, ws, c, deterministic=deterministic)
    image = out[image_mode]
    if image_mode == "image_depth":
        flat = -image.flatten(1)  # (B, R*R)
        lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        image = ((flat - lo) / (hi - lo).clamp_min(1e-8) * 2 - 1).view_as(image)
    return to_uint8(image)


def render_grid(G, ws: torch.Tensor, views: torch.Tensor, *, batch_size: int, progress: bool,
                **render_kwargs) -> np.ndarray:
    """Every style code (N rows) from every view label (V columns), batch by batch -> one uint8 image."""
    pairs = [(i, j) for i in range(len(ws)) for j in range(len(views))]
    tiles = []
    for start in tqdm(range(0, len(pairs), batch_size), desc="grid", unit="batch", disable=not progress):
        rows, cols = zip(*pairs[start:start + batch_size])
        tiles.append(render_uint8(G, ws[list(rows)], views[list(cols)], **render_kwargs))
    return tile(np.concatenate(tiles), ncols=len(views))


def orbit_frames(G, ws: torch.Tensor, labels: torch.Tensor, *, batch_size: int, progress: bool,
                 noise_mode: str, **render_kwargs) -> Iterator[np.ndarray]:
    """Frames of all style codes ws (N, ...) seen from each orbit label (F, 25), tiled side by side.

    The tri-planes of each batch of codes are computed once and rendered from every label (the backbone does not
    depend on the camera), so noise_mode 'random' draws one noise for the whole video.
    """
    ncols = math.ceil(math.sqrt(len(ws)))
    with torch.no_grad():
        batches = [(ws[i:i + batch_size], G.planes(ws[i:i + batch_size], noise_mode=noise_mode))
                   for i in range(0, len(ws), batch_size)]
    for c in tqdm(labels, desc="orbit", unit="frame", disable=not progress):
        images = [render_uint8(G, codes, c.expand(len(codes), 25), planes=planes, noise_mode=noise_mode,
                               **render_kwargs) for codes, planes in batches]
        yield tile(np.concatenate(images), ncols=ncols)


def check_render_options(opts: dict) -> None:
    """Raise ValueError naming the first invalid entry of a ``conf/render/`` config."""
    if opts["image_mode"] not in IMAGE_MODES:
        raise ValueError(f"render.image_mode must be one of {IMAGE_MODES}, got {opts['image_mode']!r}")
    if opts["noise_mode"] not in NOISE_MODES:
        raise ValueError(f"render.noise_mode must be one of {NOISE_MODES}, got {opts['noise_mode']!r}")
    if not opts["seeds"] or not all(isinstance(s, int) and s >= 0 for s in opts["seeds"]):
        raise ValueError(f"render.seeds must be a non-empty list of non-negative ints, got {opts['seeds']}")
    if not all(isinstance(s, int) and s >= 0 for s in opts["orbit"]["seeds"]):
        raise ValueError(f"render.orbit.seeds must be a list of non-negative ints, got {opts['orbit']['seeds']}")
    if not all(isinstance(v, list) and len(v) == 2 for v in opts["views"]):
        raise ValueError(f"render.views must be a list of [yaw, pitch] pairs, got {opts['views']}")
    for key, value in (("batch_size", opts["batch_size"]), ("depth_mult", opts["depth_mult"]),
                       ("orbit.frames", opts["orbit"]["frames"]), ("orbit.fps", opts["orbit"]["fps"])):
        if not value > 0:
            raise ValueError(f"render.{key} must be positive, got {value}")


def load_generator_from_config(cfg: DictConfig):
    """Instantiate ``cfg.generator`` (with the ``ckpt=`` shortcut applied); our errors come out unwrapped."""
    if cfg.ckpt is not None:
        cfg.generator.ckpt = cfg.ckpt
    if OmegaConf.is_missing(cfg.generator, "ckpt"):
        raise ValueError("this generator config needs a checkpoint: pass ckpt=PATH (a texface checkpoint "
                         "directory, an official EG3D .pkl or TEx-Face's .pth)")
    try:
        return hydra.utils.instantiate(cfg.generator)
    except InstantiationException as err:
        if isinstance(err.__cause__, (CheckpointError, ValueError)):
            raise err.__cause__ from None
        raise


def run(cfg: DictConfig) -> list[Path]:
    """Render what ``cfg.render`` asks for with ``cfg.generator``; returns the written files."""
    opts = OmegaConf.to_container(cfg.render, resolve=True)
    check_render_options(opts)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    G = load_generator_from_config(cfg).to(device)
    for key in ("depth_resolution", "depth_resolution_importance"):  # official gen_videos --sample_mult
        G.rendering_kwargs[key] = int(G.rendering_kwargs[key] * opts["depth_mult"])
    render_kwargs = dict(image_mode=opts["image_mode"], noise_mode=opts["noise_mode"],
                         deterministic=opts["deterministic"], batch_size=opts["batch_size"], progress=cfg.progress)
    out_dir = Path(cfg.out_dir)
    written = []

    # Style codes are conditioned on the frontal camera, whatever camera renders them.
    frontal = frontal_labels(G, 1, device)

    def style_codes(seeds: list[int]) -> torch.Tensor:  # (N, num_ws, w_dim)
        z = seed_latents(seeds, G.z_dim).to(device)
        return G.mapping(z, frontal.expand(len(seeds), 25), truncation_psi=opts["truncation_psi"],
                         truncation_cutoff=opts["truncation_cutoff"])

    with torch.no_grad():
        grid = render_grid(G, style_codes(opts["seeds"]), view_labels(G, opts["views"]).to(device),
                           **render_kwargs)
        written.append(save_png(grid, out_dir / "grid.png"))
        print(f"wrote {written[-1]}  ({len(opts['seeds'])} seeds x {len(opts['views'])} views, {opts['image_mode']})")
        if opts["orbit"]["seeds"]:
            orbit = opts["orbit"]
            labels = orbit_labels(orbit["frames"], yaw_range=orbit["yaw_range"], pitch_range=orbit["pitch_range"],
                                  radius=G.rendering_kwargs["avg_camera_radius"],
                                  pivot=G.rendering_kwargs["avg_camera_pivot"], focal=FFHQ_FOCAL).to(device)
            frames = orbit_frames(G, style_codes(orbit["seeds"]), labels, **render_kwargs)
            written.append(write_mp4(frames, out_dir / "orbit.mp4", fps=orbit["fps"]))
            print(f"wrote {written[-1]}  ({orbit['frames']} frames at {orbit['fps']} fps, seeds {orbit['seeds']})")
    return written


@hydra.main(version_base="1.3", config_path="../../conf", config_name="render")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (CheckpointError, ValueError) as err:
        print(f"error: {first_line(err)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
