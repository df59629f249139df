"""Cameras: labels rebuilt from the fixtures' yaw/pitch, pose geometry, samplers and the video orbit."""
from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import assert_close, reference_fixture
from safetensors.torch import load_file

from eg3d.camera import (FFHQ_FOCAL, FFHQ_PIVOT, FFHQ_RADIUS, GaussianCameraPoseSampler, LookAtPoseSampler,
                         camera_labels, fov_to_intrinsics, intrinsics_from_focal, look_at, mirror_labels,
                         orbit_labels, rotate_about_pivot, split_labels)


def _recover_angles(origin: torch.Tensor, radius: float):
    """Yaw and pitch of camera centres (B, 3), inverting the documented parametrisation in float64."""
    x, y, z = origin.double().unbind(-1)
    yaw = math.pi - torch.atan2(z, x)
    pitch = math.pi * (1 - y / radius) / 2
    return yaw, pitch


@pytest.mark.parametrize("name", ["tiny", "mid"])
def test_labels_rebuilt_from_meta(name):
    folder = reference_fixture(f"eg3d_reference/{name}")
    meta = json.loads((folder / "meta.json").read_text())
    expected = load_file(folder / "io.safetensors")["c"]
    pivot = meta["G_kwargs"]["rendering_kwargs"]["avg_camera_pivot"]
    cam2world = torch.cat([LookAtPoseSampler.sample(yaw, pitch, pivot, radius=meta["camera_radius"])
                           for yaw, pitch in zip(meta["yaws"], meta["pitches"])])
    labels = camera_labels(cam2world, fov_to_intrinsics(meta["fov_degrees"]))
    assert_close(labels, expected, atol=1e-6, rel=1e-6, name=f"{name}/c")

    # Batched means give the same cameras as one call per camera.
    batched = LookAtPoseSampler.sample(torch.tensor(meta["yaws"]), torch.tensor(meta["pitches"]), pivot,
                                       radius=meta["camera_radius"], batch_size=len(meta["yaws"]))
    assert torch.equal(batched, cam2world)


def test_fov_to_intrinsics_uses_eg3d_constants():
    k = fov_to_intrinsics(18.837)
    focal = 1 / (1.414 * math.tan(18.837 * 3.14159 / 360))
    assert abs(focal - 4.263391) < 1e-6  # the value the fixtures' README quotes
    expected = torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], dtype=torch.float32)
    assert torch.equal(k, expected)
    with pytest.raises(ValueError, match="fov_degrees"):
        fov_to_intrinsics(0.0)


def test_rotations_are_orthonormal_and_aim_at_the_pivot():
    gen = torch.Generator().manual_seed(0)
    yaws = torch.rand(64, generator=gen) * 2 * math.pi
    pitches = torch.rand(64, generator=gen) * 3.0 + 0.07
    pivot = torch.tensor(FFHQ_PIVOT)
    cam2world = LookAtPoseSampler.sample(yaws, pitches, pivot, radius=FFHQ_RADIUS, batch_size=64).double()
    rot = cam2world[:, :3, :3]
    eye = torch.eye(3, dtype=torch.float64).expand(64, 3, 3)
    assert torch.allclose(rot.transpose(1, 2) @ rot, eye, atol=1e-6)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(64, dtype=torch.float64), atol=1e-6)
    assert torch.equal(cam2world[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64).expand(64, 4))
    centre = cam2world[:, :3, 3]
    assert torch.allclose(centre.norm(dim=-1), torch.full((64,), FFHQ_RADIUS, dtype=torch.float64), atol=1e-6)
    to_pivot = torch.nn.functional.normalize(pivot.double() - centre, dim=-1)
    assert torch.allclose(rot[:, :, 2], to_pivot, atol=1e-6)  # forward column
    assert torch.all(rot[:, 1, 0].abs() < 1e-6)  # no roll: "right" stays horizontal
    assert torch.all(rot[:, 1, 1] < 0)  # "down" points down in a y-up world
    yaw, pitch = _recover_angles(centre, FFHQ_RADIUS)
    assert torch.allclose(torch.cos(yaw), torch.cos(yaws.double()), atol=1e-5)  # yaw is only defined mod 2*pi
    assert torch.allclose(torch.sin(yaw), torch.sin(yaws.double()), atol=1e-5)
    assert torch.allclose(pitch, pitches.double(), atol=1e-5)


def test_frontal_camera():
    cam2world = LookAtPoseSampler.sample(math.pi / 2, math.pi / 2, FFHQ_PIVOT, radius=FFHQ_RADIUS)[0]
    assert torch.allclose(cam2world[:3, 3], torch.tensor([0.0, 0.0, 2.7]), atol=1e-6)
    # Looking down -z from +z: right = +x, down = -y, forward = -z.
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
    assert torch.allclose(cam2world[:3, :3], expected, atol=1e-6)


def test_look_at_matches_sampler_and_rejects_degenerate_poses():
    origin = torch.tensor([[0.3, -0.4, 2.5], [1.0, 2.0, -1.0]])
    pose = look_at(origin, torch.tensor([0.0, 0.1, 0.2]))
    assert torch.equal(pose[:, :3, 3], origin)
    forward = torch.nn.functional.normalize(torch.tensor([0.0, 0.1, 0.2]) - origin, dim=-1)
    assert torch.allclose(pose[:, :3, 2], forward, atol=1e-7)
    with pytest.raises(ValueError, match="up direction"):
        look_at(torch.tensor([[0.0, 2.0, 0.0]]), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        look_at(torch.tensor([0.0, 0.0, 2.7]), (0.0, 0.0, 0.0))


def test_pitch_is_clamped_off_the_poles():
    top = LookAtPoseSampler.sample(0.3, 0.0, (0.0, 0.0, 0.0), radius=2.0)
    assert torch.isfinite(top).all()
    assert torch.equal(top, LookAtPoseSampler.sample(0.3, -1.0, (0.0, 0.0, 0.0), radius=2.0))
    _, pitch = _recover_angles(top[:, :3, 3], 2.0)
    assert abs(pitch.item() - 1e-5) < 1e-6
    bottom = LookAtPoseSampler.sample(0.3, 4.0, (0.0, 0.0, 0.0), radius=2.0)
    _, pitch = _recover_angles(bottom[:, :3, 3], 2.0)
    assert abs(pitch.item() - (math.pi - 1e-5)) < 1e-6


def test_gaussian_sampler():
    fixed = GaussianCameraPoseSampler.sample(1.2, 1.4, radius=2.7, batch_size=3)
    assert torch.equal(fixed, LookAtPoseSampler.sample(1.2, 1.4, (0.0, 0.0, 0.0), radius=2.7, batch_size=3))
    assert not torch.allclose(fixed, LookAtPoseSampler.sample(1.2, 1.4, FFHQ_PIVOT, radius=2.7, batch_size=3))

    gen = torch.Generator().manual_seed(3)
    poses = GaussianCameraPoseSampler.sample(math.pi / 2, math.pi / 2, 0.3, 0.1, radius=2.7, batch_size=4000,
                                             generator=gen)
    yaw, pitch = _recover_angles(poses[:, :3, 3], 2.7)
    assert abs(yaw.mean().item() - math.pi / 2) < 0.03 and abs(yaw.std().item() - 0.3) < 0.02
    assert abs(pitch.mean().item() - math.pi / 2) < 0.01 and abs(pitch.std().item() - 0.1) < 0.007
    # Same seed, same cameras; yaw is drawn before pitch, as in EG3D.
    again = GaussianCameraPoseSampler.sample(math.pi / 2, math.pi / 2, 0.3, 0.1, radius=2.7, batch_size=4000,
                                             generator=torch.Generator().manual_seed(3))
    assert torch.equal(poses, again)
    draws = torch.randn((4000, 1), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(yaw.float(), math.pi / 2 + 0.3 * draws[:, 0], atol=1e-5)

    with pytest.raises(TypeError, match="LookAtPoseSampler"):
        GaussianCameraPoseSampler.sample(1.2, 1.4, torch.tensor(FFHQ_PIVOT))


def test_labels_round_trip():
    cam2world = LookAtPoseSampler.sample(torch.tensor([1.0, 2.0]), torch.tensor([1.3, 1.6]), FFHQ_PIVOT,
                                         radius=2.7, batch_size=2)
    intrinsics = fov_to_intrinsics(18.837)
    c = camera_labels(cam2world, intrinsics)
    assert c.shape == (2, 25)
    assert torch.equal(c[:, [3, 7, 11]], cam2world[:, :3, 3])  # row-major: translation is entries 3, 7, 11
    assert torch.equal(c[:, 16], intrinsics[0, 0].expand(2))
    back_pose, back_k = split_labels(c)
    assert torch.equal(back_pose, cam2world) and torch.equal(back_k, intrinsics.expand(2, 3, 3))
    per_camera = camera_labels(cam2world, intrinsics.expand(2, 3, 3).clone())
    assert torch.equal(per_camera, c)
    with pytest.raises(ValueError, match="intrinsics"):
        camera_labels(cam2world, torch.eye(3).expand(3, 3, 3))
    with pytest.raises(ValueError, match=r"\(B, 25\)"):
        split_labels(torch.zeros(2, 24))


def test_orbit_labels_follow_the_tex_face_path():
    n = 8
    c = orbit_labels(n)
    assert c.shape == (n, 25)
    cam2world, intrinsics = split_labels(c)
    assert torch.allclose(intrinsics, torch.tensor([[FFHQ_FOCAL, 0, 0.5], [0, FFHQ_FOCAL, 0.5], [0, 0, 1]]))

    def expected_centre(yaw, pitch):
        phi = math.acos(1 - 2 * pitch / math.pi)
        return torch.tensor([2.7 * math.sin(phi) * math.cos(math.pi - yaw), 2.7 * math.cos(phi),
                             2.7 * math.sin(phi) * math.sin(math.pi - yaw)])

    # Frame 0: yaw at its centre, pitch at its maximum; a quarter loop later: yaw at its max, pitch centred.
    centre0 = expected_centre(math.pi / 2, math.pi / 2 - 0.05 + 0.35)
    centre_q = expected_centre(math.pi / 2 + 0.35, math.pi / 2 - 0.05)
    centre_h = expected_centre(math.pi / 2, math.pi / 2 - 0.05 - 0.35)
    assert torch.allclose(cam2world[0, :3, 3], centre0, atol=1e-6)
    assert abs(cam2world[0, 0, 3].item()) < 1e-6  # yaw pi/2: the camera is straight ahead in x
    assert torch.allclose(cam2world[n // 4, :3, 3], centre_q, atol=1e-6)
    assert torch.allclose(cam2world[n // 2, :3, 3], centre_h, atol=1e-6)
    forward = torch.nn.functional.normalize(torch.tensor(FFHQ_PIVOT) - cam2world[:, :3, 3], dim=-1)
    assert torch.allclose(cam2world[:, :3, 2], forward, atol=1e-6)
    # The loop closes: one more frame would repeat frame 0.
    assert torch.allclose(orbit_labels(n + 1)[0], c[0])
    assert torch.allclose(orbit_labels(2 * n)[2], c[1], atol=1e-6)
    with pytest.raises(ValueError, match="n_frames"):
        orbit_labels(0)


def test_rotate_about_pivot_moves_the_yaw_of_a_look_at_camera():
    # About the pivot's vertical axis a camera on the orbit sphere leaves the sphere unless the pivot is on the
    # axis: with pivot (0, 0, 0) rotating by d is exactly the sampler at yaw + d.
    pivot = (0.0, 0.0, 0.0)
    start = camera_labels(LookAtPoseSampler.sample(1.3, 1.4, pivot, radius=2.7), intrinsics_from_focal(FFHQ_FOCAL))
    expected = camera_labels(LookAtPoseSampler.sample(1.3 + 0.4, 1.4, pivot, radius=2.7),
                             intrinsics_from_focal(FFHQ_FOCAL))
    assert torch.allclose(rotate_about_pivot(start, 0.4, pivot), expected, atol=1e-5)


def test_rotate_about_pivot_keeps_the_camera_aimed_at_the_pivot():
    start = camera_labels(LookAtPoseSampler.sample(1.2, 1.5, FFHQ_PIVOT, radius=2.7), intrinsics_from_focal(FFHQ_FOCAL))
    moved, _ = split_labels(rotate_about_pivot(start, -0.4))
    before, _ = split_labels(start)
    pivot = torch.tensor(FFHQ_PIVOT)
    to_pivot = pivot - moved[0, :3, 3]
    # OpenCV axes: the camera looks along +z of its frame.
    assert torch.allclose(to_pivot / to_pivot.norm(), moved[0, :3, 2], atol=1e-5)
    assert torch.allclose(to_pivot.norm(), (pivot - before[0, :3, 3]).norm(), atol=1e-5)


def test_mirror_labels_mirror_the_yaw():
    pivot = (0.0, 0.0, 0.2)
    c = camera_labels(LookAtPoseSampler.sample(math.pi / 2 + 0.3, 1.4, pivot, radius=2.7), intrinsics_from_focal(4.26))
    mirrored = camera_labels(LookAtPoseSampler.sample(math.pi / 2 - 0.3, 1.4, pivot, radius=2.7),
                             intrinsics_from_focal(4.26))
    # The look-at frame of the mirrored pose has its x axis flipped relative to S M S, so compare positions and the
    # viewing direction (column 2), which a mirror must map exactly.
    m, _ = split_labels(mirror_labels(c))
    e, _ = split_labels(mirrored)
    assert torch.allclose(m[:, :3, 3], e[:, :3, 3], atol=1e-5) and torch.allclose(m[:, :3, 2], e[:, :3, 2], atol=1e-5)
    assert torch.equal(mirror_labels(mirror_labels(c)), c)
