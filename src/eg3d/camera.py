"""Cameras for EG3D: poses from yaw/pitch, intrinsics from a field of view, and 25-d camera labels.

Conventions (the official EG3D ones, which the reference fixtures follow):

- **World.** y is up; the FFHQ head sits near the origin facing +z; cameras orbit the pivot ``FFHQ_PIVOT``
  = (0, 0, 0.2) at radius ``FFHQ_RADIUS`` = 2.7.
- **Pose.** A 4x4 camera-to-world matrix with OpenCV camera axes: its rotation columns are the camera's right
  (x), down (y) and forward (z) directions in world coordinates, its last column the camera centre.
- **Yaw/pitch.** Yaw ``h`` is the azimuth about the y axis, pitch ``v`` the polar angle from +y, both in
  radians; the frontal camera is ``h = v = pi/2``. The polar angle is clamped to [1e-5, pi - 1e-5] and
  remapped as ``phi = arccos(1 - 2v/pi)``; the centre is
  ``r * (sin(phi)cos(pi-h), cos(phi), sin(phi)sin(pi-h))`` about the world origin (not about the pivot),
  looking at the pivot. The frontal camera thus sits at (0, 0, 2.7).
- **Look-at.** ``forward = normalize(target - centre)``, ``right = -normalize(up x forward)`` with world up
  (0, 1, 0), ``down = normalize(forward x right)``.
- **Intrinsics.** Normalized by the image size: ``[[f, 0, 0.5], [0, f, 0.5], [0, 0, 1]]`` with
  ``f = 1 / (1.414 * tan(fov_degrees * 3.14159 / 360))`` (EG3D's rounded constants, kept so that labels match
  its own). FFHQ models use ``FFHQ_FOCAL`` = 4.2647 (TEx-Face's hard-coded value).
- **Label.** ``c`` (B, 25) = the 16 entries of cam2world in row-major order, then the 9 entries of the
  intrinsics. It is both the generator's conditioning input and its render camera.
- **Orbit.** :func:`orbit_labels` is the camera path of TEx-Face's ``gen_videos``: frame f of n has
  ``yaw = yaw_center + yaw_range*sin(2*pi*f/n)`` and ``pitch = pitch_center + pitch_range*cos(2*pi*f/n)``.
  The official script writes pi as 3.14 (centres 1.57 and 1.52, and a loop that falls 0.05% short of
  closing); we use pi, so frame n would equal frame 0. Pass ``yaw_center=3.14/2, pitch_center=3.14/2-0.05``
  for its exact centres.
"""
from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F

FFHQ_FOCAL = 4.2647
FFHQ_PIVOT = (0.0, 0.0, 0.2)
FFHQ_RADIUS = 2.7

POLAR_EPS = 1e-5  # keeps the camera off the poles, where the look-at frame is undefined


def focal_from_fov(fov_degrees: float) -> float:
    """Normalized focal length of a full field of view, with EG3D's constants 1.414 and 3.14159."""
    if not 0 < fov_degrees < 180:
        raise ValueError(f"fov_degrees must be in (0, 180), got {fov_degrees}")
    return float(1 / (math.tan(fov_degrees * 3.14159 / 360) * 1.414))


def intrinsics_from_focal(focal: float, device=None) -> torch.Tensor:
    """(3, 3) normalized intrinsics with the principal point at the image centre."""
    return torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], dtype=torch.float32, device=device)


def fov_to_intrinsics(fov_degrees: float, device=None) -> torch.Tensor:
    """(3, 3) normalized intrinsics for a full field of view in degrees (18.837 gives f = 4.263391)."""
    return intrinsics_from_focal(focal_from_fov(fov_degrees), device=device)


def look_at(camera_origin: torch.Tensor, pivot, up=(0.0, 1.0, 0.0)) -> torch.Tensor:
    """Camera-to-world matrices of cameras at ``camera_origin`` (B, 3) looking at ``pivot`` ((B, 3) or (3,)),
    without roll about the world ``up`` direction. Returns (B, 4, 4) with columns
    [right, down, forward, origin]."""
    if camera_origin.ndim != 2 or camera_origin.shape[-1] != 3:
        raise ValueError(f"camera_origin must be (B, 3), got {tuple(camera_origin.shape)}")
    device, dtype = camera_origin.device, camera_origin.dtype
    pivot = torch.as_tensor(pivot, dtype=dtype, device=device)
    up = torch.as_tensor(up, dtype=dtype, device=device).expand_as(camera_origin)
    forward = F.normalize(pivot - camera_origin, dim=-1, eps=0.0)
    right = -F.normalize(torch.cross(up, forward, dim=-1), dim=-1, eps=0.0)
    down = F.normalize(torch.cross(forward, right, dim=-1), dim=-1, eps=0.0)
    if not torch.isfinite(right).all():
        raise ValueError("a camera looks along the up direction (or sits on its pivot); its pose is "
                         "undefined")

    cam2world = torch.eye(4, dtype=dtype, device=device).repeat(camera_origin.shape[0], 1, 1)
    cam2world[:, :3, :3] = torch.stack([right, down, forward], dim=-1)
    cam2world[:, :3, 3] = camera_origin
    return cam2world


def _angles(mean, stddev, batch_size, device, generator):
    """``mean + stddev * N(0, 1)`` as a (batch_size, 1) float32 column; mean is a number or (batch_size,)."""
    if not isinstance(stddev, Real):
        raise TypeError(f"stddevs must be numbers, got {type(stddev).__name__}; GaussianCameraPoseSampler "
                        f"looks at the origin, use LookAtPoseSampler to aim at another point")
    noise = torch.randn((batch_size, 1), device=device, generator=generator)
    mean = torch.as_tensor(mean, dtype=torch.float32, device=device).reshape(-1, 1)
    if mean.shape[0] not in (1, batch_size):
        raise ValueError(f"angle means must be numbers or have batch_size={batch_size} entries, "
                         f"got {mean.shape[0]}")
    return noise * stddev + mean


def orbit_position(yaw: torch.Tensor, pitch: torch.Tensor, radius: float) -> torch.Tensor:
    """Camera centres (B, 3) at yaw/pitch (B, 1) on a sphere of ``radius`` about the world origin."""
    pitch = torch.clamp(pitch, POLAR_EPS, math.pi - POLAR_EPS)
    phi = torch.arccos(1 - 2 * (pitch / math.pi))
    return torch.cat([radius * torch.sin(phi) * torch.cos(math.pi - yaw),
                      radius * torch.cos(phi),
                      radius * torch.sin(phi) * torch.sin(math.pi - yaw)], dim=-1)


class LookAtPoseSampler:
    """Cameras on a sphere about the origin, yaw/pitch drawn from Gaussians, aimed at ``lookat_position``."""

    @staticmethod
    def sample(horizontal_mean, vertical_mean, lookat_position, horizontal_stddev=0., vertical_stddev=0.,
               radius=1., batch_size=1, device="cpu", *,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """
        Args:
            horizontal_mean, vertical_mean: yaw and pitch in radians (numbers, or (batch_size,) tensors).
            lookat_position: (3,) or (batch_size, 3) point the cameras look at.
            horizontal_stddev, vertical_stddev: Gaussian spreads of yaw and pitch (0: fixed pose).
            radius: distance of the cameras from the world origin.
            generator: optional RNG for the Gaussian draws (yaw is drawn before pitch, as in EG3D).
        Returns:
            (batch_size, 4, 4) cam2world matrices.
        """
        yaw = _angles(horizontal_mean, horizontal_stddev, batch_size, device, generator)
        pitch = _angles(vertical_mean, vertical_stddev, batch_size, device, generator)
        origin = orbit_position(yaw, pitch, radius)
        pivot = torch.as_tensor(lookat_position, dtype=torch.float32, device=device)
        return look_at(origin, pivot)


class GaussianCameraPoseSampler:
    """Cameras on a sphere about the origin, yaw/pitch drawn from Gaussians, aimed at the origin (EG3D's
    semantics: same as :class:`LookAtPoseSampler` with ``lookat_position = (0, 0, 0)``)."""

    @staticmethod
    def sample(horizontal_mean, vertical_mean, horizontal_stddev=0., vertical_stddev=0., radius=1.,
               batch_size=1, device="cpu", *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Arguments as :meth:`LookAtPoseSampler.sample` without ``lookat_position``; returns
        (batch_size, 4, 4)."""
        return LookAtPoseSampler.sample(horizontal_mean, vertical_mean, (0.0, 0.0, 0.0), horizontal_stddev,
                                        vertical_stddev, radius, batch_size, device, generator=generator)


def camera_labels(cam2world: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """25-d labels (B, 25) from cam2world (B, 4, 4) and intrinsics (3, 3) shared by all, or (B, 3, 3)."""
    if cam2world.ndim != 3 or cam2world.shape[1:] != (4, 4):
        raise ValueError(f"cam2world must be (B, 4, 4), got {tuple(cam2world.shape)}")
    batch = cam2world.shape[0]
    if intrinsics.shape == (3, 3):
        intrinsics = intrinsics.expand(batch, 3, 3)
    if intrinsics.shape != (batch, 3, 3):
        raise ValueError(f"intrinsics must be (3, 3) or ({batch}, 3, 3), got {tuple(intrinsics.shape)}")
    intrinsics = intrinsics.to(device=cam2world.device, dtype=cam2world.dtype)
    return torch.cat([cam2world.reshape(batch, 16), intrinsics.reshape(batch, 9)], dim=1)


def split_labels(c: torch.Tensor):
    """Inverse of :func:`camera_labels`: (B, 25) -> cam2world (B, 4, 4), intrinsics (B, 3, 3)."""
    if c.ndim != 2 or c.shape[1] != 25:
        raise ValueError(f"camera labels must be (B, 25), got {tuple(c.shape)}")
    return c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3)


def orbit_labels(n_frames: int, *, yaw_center: float = math.pi / 2, pitch_center: float = math.pi / 2 - 0.05,
                 yaw_range: float = 0.35, pitch_range: float = 0.35, radius: float = FFHQ_RADIUS,
                 pivot=FFHQ_PIVOT, focal: float = FFHQ_FOCAL) -> torch.Tensor:
    """Labels (n_frames, 25) of one loop of TEx-Face's video orbit (see the module docstring)."""
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive int, got {n_frames!r}")
    angle = 2 * math.pi * torch.arange(n_frames, dtype=torch.float64) / n_frames
    yaws = (yaw_center + yaw_range * torch.sin(angle)).float()
    pitches = (pitch_center + pitch_range * torch.cos(angle)).float()
    cam2world = LookAtPoseSampler.sample(yaws, pitches, pivot, radius=radius, batch_size=n_frames)
    return camera_labels(cam2world, intrinsics_from_focal(focal))


def rotate_about_pivot(c: torch.Tensor, yaw: float, pivot=FFHQ_PIVOT) -> torch.Tensor:
    """Labels (B, 25) of cameras ``c`` moved rigidly by ``yaw`` radians about the vertical axis through ``pivot``:
    a camera aimed at the pivot stays aimed at it, at the same distance; intrinsics are kept. Positive ``yaw``
    moves a camera the way a larger LookAtPoseSampler yaw does (novel views of an inverted face)."""
    cam2world, intrinsics = split_labels(c)
    cos, sin = math.cos(yaw), math.sin(yaw)
    rotation = torch.tensor([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]], dtype=c.dtype, device=c.device)
    p = torch.as_tensor(pivot, dtype=c.dtype, device=c.device)
    moved = cam2world.clone()
    moved[:, :3, :3] = rotation @ cam2world[:, :3, :3]
    moved[:, :3, 3] = (cam2world[:, :3, 3] - p) @ rotation.T + p
    return camera_labels(moved, intrinsics)


def mirror_labels(c: torch.Tensor) -> torch.Tensor:
    """Labels (B, 25) of the cameras that see ``c``'s views mirrored left-right: S @ cam2world @ S with S = diag(-1,
    1, 1, 1), i.e. the world and the camera x axes flipped (the entries [0,1..3] and [1..2,0] change sign)."""
    cam2world, intrinsics = split_labels(c)
    flip = torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=c.dtype, device=c.device)
    return camera_labels(flip[:, None] * cam2world * flip[None, :], intrinsics)
