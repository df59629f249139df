"""The face world's sampling: determinism by seed, independence of streams, captions that state the true levels."""
from __future__ import annotations

import math

import pytest
import torch

from eg3d.camera import FFHQ_FOCAL, FFHQ_PIVOT, FFHQ_RADIUS, split_labels
from faceworld import IDENTITY_DIM, FaceWorld, identity_from_seeds
from faceworld.cameras import PITCH_CLIP, YAW_CLIP, labels_at
from faceworld.expression import CONTROLS, EXPRESSION_DIM, expression_basis, expression_controls
from texface.captions import ATTRIBUTES, NUM_LEVELS, parse
from texface.errors import ConfigError


def _same(a, b) -> bool:
    return (a.ids == b.ids and a.captions == b.captions and torch.equal(a.latents, b.latents)
            and torch.equal(a.identity, b.identity) and torch.equal(a.expressions, b.expressions)
            and all(torch.equal(a.levels[k], b.levels[k]) for k in ATTRIBUTES))


def test_sampling_is_deterministic_by_seed():
    a, b = FaceWorld(3).sample(40, seed=7), FaceWorld(3).sample(40, seed=7)
    assert _same(a, b)
    assert torch.equal(FaceWorld(3).sample_cameras(40, 7), FaceWorld(3).sample_cameras(40, 7))
    assert torch.equal(a.params().skin_colour, b.params().skin_colour)


def test_different_seeds_differ():
    a = FaceWorld(0).sample(40, seed=1)
    for other in (FaceWorld(0).sample(40, seed=2), FaceWorld(1).sample(40, seed=1)):
        assert not torch.equal(a.latents, other.latents)
        assert not torch.equal(a.expressions, other.expressions)
        assert any(not torch.equal(a.levels[k], other.levels[k]) for k in ATTRIBUTES)
    assert not torch.equal(FaceWorld(0).sample_cameras(40, 1), FaceWorld(0).sample_cameras(40, 2))


def test_camera_settings_do_not_change_the_heads():
    assert _same(FaceWorld(0, yaw_std=0.1).sample(10, seed=4), FaceWorld(0).sample(10, seed=4))


def test_levels_shapes_and_priors():
    heads = FaceWorld(0).sample(600, seed=0)
    assert len(heads) == 600 and heads.identity.shape == (600, IDENTITY_DIM)
    assert heads.expressions.shape == (600, EXPRESSION_DIM)
    for attr in ATTRIBUTES:
        assert heads.levels[attr].shape == (600,) and int(heads.levels[attr].max()) < NUM_LEVELS[attr]
    assert int(heads.levels["beard"][heads.levels["gender"] == 0].max()) == 0
    assert 0.4 < heads.levels["gender"].float().mean() < 0.6
    assert abs(heads.expressions.std().item() - 1) < 0.05


def test_captions_state_the_true_levels():
    heads = FaceWorld(0).sample(300, seed=5)
    captioned = 0
    for i, captions in enumerate(heads.captions):
        captioned += bool(captions)
        for caption in captions:
            stated = parse(caption)
            assert stated, caption
            for attr, level in stated.items():
                assert level == int(heads.levels[attr][i]), (caption, attr, level)
    assert 0.8 < captioned / 300 < 0.97  # about 10% uncaptioned


def test_heads_follow_from_their_latents():
    world = FaceWorld(0)
    heads = world.sample(5, seed=0)
    again = world.heads_from_latents(heads.latents, seed=0)
    assert _same(heads, again)
    assert torch.equal(heads.identity, heads.latents[:, 6:32])
    assert torch.equal(identity_from_seeds([12, 12])[0], identity_from_seeds([12])[0])
    subset = heads.subset([3, 1])
    assert subset.ids == [heads.ids[3], heads.ids[1]] and torch.equal(subset.identity, heads.identity[[3, 1]])


def test_cameras_are_ffhq_like():
    world = FaceWorld(0)
    yaw, pitch = world.sample_poses(2000, seed=0)
    assert yaw.abs().max() <= YAW_CLIP + 1e-6 and pitch.abs().max() <= PITCH_CLIP + 1e-6
    assert 0.25 < yaw.std() < 0.32 and 0.12 < pitch.std() < 0.17
    cam2world, intrinsics = split_labels(world.sample_cameras(50, seed=0))
    centres = cam2world[:, :3, 3]
    assert torch.allclose(centres.norm(dim=1), torch.full((50,), FFHQ_RADIUS), atol=1e-5)
    forward = cam2world[:, :3, 2]
    to_pivot = torch.nn.functional.normalize(torch.tensor(FFHQ_PIVOT) - centres, dim=1)
    assert torch.allclose(forward, to_pivot, atol=1e-5)
    assert torch.allclose(intrinsics[:, 0, 0], torch.full((50,), FFHQ_FOCAL))
    frontal, _ = split_labels(labels_at(torch.zeros(1), torch.zeros(1)))
    assert torch.allclose(frontal[0, :3, 3], torch.tensor([0.0, 0.0, FFHQ_RADIUS]), atol=1e-5)
    right, _ = split_labels(labels_at(torch.tensor([0.5]), torch.zeros(1)))
    assert right[0, 0, 3] > 0  # positive yaw moves the camera to +x


def test_config_round_trip_and_checks():
    world = FaceWorld(5, yaw_std=0.2, p_uncaptioned=0.0)
    again = FaceWorld(**world.config)
    assert again.config == world.config and _same(again.sample(8, 1), world.sample(8, 1))
    with pytest.raises(ConfigError):
        FaceWorld(-1)
    with pytest.raises(ConfigError):
        FaceWorld(0, p_mention=1.5)
    with pytest.raises(ConfigError):
        FaceWorld(0).sample(-3)


def test_expression_maps():
    basis = expression_basis()
    assert basis.shape == (EXPRESSION_DIM, len(CONTROLS))
    assert torch.allclose(basis.T @ basis, torch.eye(len(CONTROLS)), atol=1e-5)
    controls = expression_controls(torch.zeros(3, EXPRESSION_DIM))
    assert set(controls) == set(CONTROLS) and all(torch.equal(v, torch.zeros(3)) for v in controls.values())
    codes = torch.randn(4000, EXPRESSION_DIM, generator=torch.Generator().manual_seed(0))
    controls = expression_controls(codes)
    for name in ("jaw_open", "eye_close"):
        assert controls[name].min() == 0 and controls[name].max() < 1
        assert 0.45 < (controls[name] > 0).float().mean() < 0.55
    for name in ("brow_raise", "jaw_side", "mouth_stretch", "lip_pout"):
        assert controls[name].min() > -1 and controls[name].max() < 1 and abs(controls[name].mean()) < 0.05
    # Directions orthogonal to the basis do nothing.
    null = codes[:1] - (codes[:1] @ basis) @ basis.T
    assert all(abs(float(v)) < 1e-5 for v in expression_controls(null).values())
    assert not math.isnan(float(controls["jaw_open"].sum()))
