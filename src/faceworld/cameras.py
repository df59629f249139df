"""FFHQ-like cameras for the face world, as EG3D 25-d labels (:mod:`eg3d.camera` conventions).

Every camera sits on the sphere of radius ``FFHQ_RADIUS`` = 2.7 about the origin, looks at the pivot ``FFHQ_PIVOT``
= (0, 0, 0.2) and has focal ``FFHQ_FOCAL`` = 4.2647 (normalised intrinsics). Yaw and pitch are offsets from the
frontal view (yaw = pitch = pi/2 in EG3D's angles): yaw ~ N(0, 0.3^2) clipped to +-0.8 rad (positive yaw moves the
camera towards +x, the head's left side), pitch ~ N(0, 0.15^2) clipped to +-0.4 rad (positive pitch moves the
camera down). That is about the spread of FFHQ's estimated poses.
"""
from __future__ import annotations

import math

import torch

from eg3d.camera import FFHQ_FOCAL, FFHQ_PIVOT, FFHQ_RADIUS, LookAtPoseSampler, camera_labels, intrinsics_from_focal

YAW_STD, YAW_CLIP = 0.3, 0.8
PITCH_STD, PITCH_CLIP = 0.15, 0.4


def labels_at(yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
    """Labels (n, 25) of FFHQ-style cameras at yaw/pitch offsets (n,) from the frontal view, in radians."""
    yaw, pitch = torch.as_tensor(yaw, dtype=torch.float32), torch.as_tensor(pitch, dtype=torch.float32)
    yaw, pitch = torch.broadcast_tensors(yaw.reshape(-1), pitch.reshape(-1))
    cam2world = LookAtPoseSampler.sample(math.pi / 2 + yaw, math.pi / 2 + pitch, FFHQ_PIVOT, radius=FFHQ_RADIUS,
                                         batch_size=yaw.shape[0])
    return camera_labels(cam2world, intrinsics_from_focal(FFHQ_FOCAL))


def sample_poses(n: int, generator: torch.Generator, *, yaw_std: float = YAW_STD, yaw_clip: float = YAW_CLIP,
                 pitch_std: float = PITCH_STD, pitch_clip: float = PITCH_CLIP) -> tuple[torch.Tensor, torch.Tensor]:
    """Yaw and pitch offsets (n,) in radians: clipped Gaussians (yaw drawn before pitch), on the CPU."""
    yaw = (torch.randn(n, generator=generator) * yaw_std).clamp(-yaw_clip, yaw_clip)
    pitch = (torch.randn(n, generator=generator) * pitch_std).clamp(-pitch_clip, pitch_clip)
    return yaw, pitch
