"""Frames out of a generator: style codes x cameras -> uint8 images, grids, orbits (with plane reuse) and morphs.

The library half of every command that shows a generator's output (``eg3d.render``, ``scd.generate``, the
training callbacks, the SCD pipeline), so there is one implementation of each:

- cameras: :func:`view_labels` (yaw/pitch offsets from the frontal pose on the generator's camera sphere),
  :func:`frontal_labels`; orbits are :func:`eg3d.camera.orbit_labels`;
- :class:`FrameRenderer`: frames of (code, camera) pairs, grids of codes x views, orbits of many codes with the
  tri-planes of each code computed ONCE for the whole path (the backbone does not depend on the camera), grid and
  per-code orbit videos from one pass, morph videos; on the accelerated path of :func:`eg3d.fast.accelerate`;
- :func:`display`: the image to show for an image mode (``image_depth`` as EG3D's gen_videos shows it);
- :func:`slerp` / :func:`morph_codes`: spherical interpolation of W+ codes, token by token;
- :func:`more_depth_samples`: temporarily more samples per ray (gen_videos' ``--sample_mult``).
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from eg3d.camera import FFHQ_FOCAL, LookAtPoseSampler, camera_labels, intrinsics_from_focal, orbit_labels
from eg3d.fast import accelerate
from texface.errors import ConfigError
from texface.media import tile, to_uint8, write_mp4s
from texface.options import check_choice

IMAGE_MODES = ("image", "image_depth", "image_raw")
NOISE_MODES = ("const", "random", "none")


def seed_latents(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """Latents (N, z_dim) of the official scripts: ``np.random.RandomState(seed).randn(z_dim)`` per seed."""
    return torch.from_numpy(np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds])).float()


def view_labels(G, views: Sequence[Sequence[float]]) -> torch.Tensor:
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


def display(out: dict[str, torch.Tensor], image_mode: str) -> torch.Tensor:
    """The image of a generator output to show for ``image_mode``, in [-1, 1] (B, C, H, W); ``image_depth`` is
    negated (near = bright) and min-max scaled per image, as EG3D's gen_videos shows it."""
    check_choice("image_mode", image_mode, IMAGE_MODES)
    image = out[image_mode]
    if image_mode == "image_depth":
        flat = -image.flatten(1)  # (B, R*R)
        lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        image = ((flat - lo) / (hi - lo).clamp_min(1e-8) * 2 - 1).view_as(image)
    return image


class FrameRenderer:
    """Renders style codes of a generator into uint8 frames, grids and videos.

    Args:
        generator: the TriPlaneGenerator (its weights, cameras and ``rendering_kwargs`` are used as they are).
        precision, compile: the rendering path (:func:`eg3d.fast.accelerate`; 'auto' = the fastest within budget
            on CUDA, exact fp32 on the CPU).
        noise_mode: backbone noise ('const' keeps renders comparable).
        deterministic: evenly spaced depth samples instead of EG3D's random jitter.
        batch_size: images (or codes, for orbits) per generator call.
        progress: progress bars.
    """

    def __init__(self, generator, *, precision: str = "auto", compile: str = "none", noise_mode: str = "const",
                 deterministic: bool = False, batch_size: int = 4, progress: bool = False):
        check_choice("noise_mode", noise_mode, NOISE_MODES)
        self.generator = generator
        self.fast = accelerate(generator, precision=precision, compile=compile)
        self.noise_mode, self.deterministic = noise_mode, bool(deterministic)
        self.batch_size, self.progress = int(batch_size), bool(progress)

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @torch.no_grad()
    def render_batch(self, ws: torch.Tensor, c: torch.Tensor, *, image_mode: str = "image",
                     planes: torch.Tensor | None = None) -> np.ndarray:
        """Codes ws (B, num_ws, w_dim) from cameras c (B, 25) in one call -> uint8 (B, H, W, 3); ``planes``: their
        tri-planes when already computed."""
        if planes is None:
            out = self.fast.synthesis(ws, c, noise_mode=self.noise_mode, deterministic=self.deterministic)
        else:
            out = self.fast.render_planes(planes, ws, c, deterministic=self.deterministic)
        return to_uint8(display(out, image_mode))

    def frames(self, ws: torch.Tensor, c: torch.Tensor | None = None, *, image_mode: str = "image",
               desc: str = "render") -> Iterator[np.ndarray]:
        """Code i from camera i (c (B, 25); None = the frontal camera), ``batch_size`` pairs per call: yields uint8
        frames (H, W, 3)."""
        ws = ws.to(self.device)
        c = frontal_labels(self.generator, len(ws), self.device) if c is None else c.to(self.device)
        with tqdm(total=len(ws), desc=desc, unit="frame", disable=not self.progress, leave=False) as bar:
            for start in range(0, len(ws), self.batch_size):
                stop = start + self.batch_size
                frames = self.render_batch(ws[start:stop], c[start:stop], image_mode=image_mode)
                bar.update(len(frames))
                yield from frames

    def render(self, ws: torch.Tensor, c: torch.Tensor | None = None, *, image_mode: str = "image") -> np.ndarray:
        """:meth:`frames` as one array (N, H, W, 3)."""
        return np.stack(list(self.frames(ws, c, image_mode=image_mode)))

    def grid(self, ws: torch.Tensor, views: torch.Tensor, *, image_mode: str = "image") -> np.ndarray:
        """Every code (N rows) from every view label (V columns) -> one uint8 image."""
        n, v = len(ws), len(views)
        rows, cols = torch.arange(n).repeat_interleave(v), torch.arange(v).repeat(n)
        frames = self.frames(ws[rows.to(ws.device)], views[cols.to(views.device)], image_mode=image_mode,
                             desc="grid")
        return tile(np.stack(list(frames)), ncols=v)

    def orbit(self, ws: torch.Tensor, cameras: torch.Tensor | int = 120, *, depth_mult: float = 1,
              image_mode: str = "image") -> Iterator[np.ndarray]:
        """All codes ws (N, ...) seen from each camera of a path in turn: yields one stack of uint8 frames
        (N, H, W, 3) per camera. ``cameras``: labels (F, 25), or a frame count for the official gen_videos orbit
        (:func:`eg3d.camera.orbit_labels` on the generator's camera sphere); ``depth_mult`` multiplies the samples
        per ray.

        The tri-planes of every code are computed once (``batch_size`` codes at a time) and rendered from every
        camera, so noise_mode 'random' draws one noise for the whole path. Tile a stack for a grid video of all
        codes, or take its rows for one video per code.
        """
        G = self.generator
        if isinstance(cameras, int):
            cameras = orbit_labels(cameras, radius=G.rendering_kwargs["avg_camera_radius"],
                                   pivot=G.rendering_kwargs["avg_camera_pivot"], focal=FFHQ_FOCAL)
        cameras, ws = cameras.to(self.device), ws.to(self.device)
        with torch.no_grad(), more_depth_samples(G, depth_mult):
            batches = [(ws[i:i + self.batch_size], self.fast.planes(ws[i:i + self.batch_size],
                                                                    noise_mode=self.noise_mode))
                       for i in range(0, len(ws), self.batch_size)]
            for c in tqdm(cameras, desc="orbit", unit="frame", disable=not self.progress, leave=False):
                yield np.concatenate([self.render_batch(codes, c.expand(len(codes), 25), image_mode=image_mode,
                                                        planes=planes) for codes, planes in batches])

    def orbit_video(self, ws: torch.Tensor, path: str | os.PathLike | None, *, each: Sequence = (),
                    fps: float = 30, cameras: torch.Tensor | int = 120, **orbit_options) -> list[Path]:
        """Write the orbit of all codes as one grid video at ``path`` (None: none) and, when ``each`` names one
        path per code, each code's own video; every frame is rendered once for all of them. ``cameras`` and
        ``orbit_options`` (depth_mult, image_mode): see :meth:`orbit`. Returns the written paths."""
        if each and len(each) != len(ws):
            raise ConfigError(f"each= needs one path per code ({len(ws)}), got {len(each)}")
        ncols = grid_columns(len(ws))
        paths = ([] if path is None else [Path(path)]) + [Path(p) for p in each]
        stacks = self.orbit(ws, cameras, **orbit_options)
        steps = (([tile(stack, ncols)] if path is not None else []) + (list(stack) if each else []) for stack in stacks)
        return write_mp4s(steps, paths, fps=fps)

    def morph_video(self, a: torch.Tensor, b: torch.Tensor, path: str | os.PathLike, *, frames: int = 60,
                    orbit: bool = False, fps: float = 30, depth_mult: float = 1, image_mode: str = "image") -> Path:
        """A video slerping code a (T, D) into code b over ``frames`` frames (:func:`morph_codes`), at the frontal
        camera or, with ``orbit``, along the gen_videos orbit."""
        G = self.generator
        cameras = None
        if orbit:
            cameras = orbit_labels(frames, radius=G.rendering_kwargs["avg_camera_radius"],
                                   pivot=G.rendering_kwargs["avg_camera_pivot"], focal=FFHQ_FOCAL)
        with more_depth_samples(G, depth_mult):
            stream = self.frames(morph_codes(a, b, frames), cameras, image_mode=image_mode, desc="morph")
            return write_mp4s(([frame] for frame in stream), [Path(path)], fps=fps)[0]


def grid_columns(n: int) -> int:
    """Columns of the near-square grid that lays out n codes (gen_videos' layout)."""
    return math.ceil(math.sqrt(n))


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, *, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation between ``a`` and ``b`` along the last axis (per W+ token), in float64.

    For each pair of vectors the result is sin((1-t)w)/sin(w) * a + sin(t w)/sin(w) * b, with w the angle
    between them: t=0 gives a, t=1 gives b, and for vectors of equal norm every intermediate has that norm
    too. Nearly parallel pairs (sin(w) < eps) fall back to linear interpolation. The W+ codes are used as they
    are (absolute, not relative to w_avg), so the angle is measured around the origin of W.
    """
    a64, b64 = a.double(), b.double()
    na = a64.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    nb = b64.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = ((a64 / na) * (b64 / nb)).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin_omega = torch.sin(omega)
    parallel = sin_omega < eps
    safe = torch.where(parallel, torch.ones_like(sin_omega), sin_omega)
    wa = torch.where(parallel, torch.full_like(omega, 1.0 - t), torch.sin((1.0 - t) * omega) / safe)
    wb = torch.where(parallel, torch.full_like(omega, t), torch.sin(t * omega) / safe)
    return (wa * a64 + wb * b64).to(a.dtype)


def morph_codes(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` codes (n, T, D) slerped token by token from code a (T, D) to code b, both ends included."""
    return torch.stack([slerp(a, b, float(t)) for t in torch.linspace(0, 1, n)])


@contextmanager
def more_depth_samples(G, mult: int):
    """Temporarily multiply the generator's coarse and importance depth samples per ray by ``mult``."""
    saved = G.rendering_kwargs
    G.rendering_kwargs = dict(saved, depth_resolution=int(saved["depth_resolution"] * mult),
                              depth_resolution_importance=int(saved["depth_resolution_importance"] * mult))
    try:
        yield
    finally:
        G.rendering_kwargs = saved
