"""Renders of the face world: outputs agree with each other, and every attribute changes the face where it should."""
from __future__ import annotations

import pytest
import torch

from eg3d.camera import split_labels
from faceworld import BACKGROUND, RAY_END, RAY_START, FaceWorld, identity_from_seeds, make_params
from faceworld.cameras import labels_at
from faceworld.expression import CONTROLS, expression_basis
from faceworld.heads import EYE_FRONT, LIP_Z
from faceworld.params import GREY_HAIR, IDENTITY_FIELDS
from faceworld.render import render
from texface.captions import ATTRIBUTES, NUM_LEVELS

R = 64
NEUTRAL = {"gender": 0, "smiling": 0, "bangs": 0, "eyeglasses": 0, "beard": 0, "age": 1}


def _heads(rows: list[dict], identity_seed: int = 3, expressions: torch.Tensor | None = None):
    n = len(rows)
    levels = {a: torch.tensor([r[a] for r in rows]) for a in ATTRIBUTES}
    identity = identity_from_seeds([identity_seed] * n)
    identity[:, IDENTITY_FIELDS.index("parting")] = 0
    return make_params(levels, identity, torch.zeros(n, 50) if expressions is None else expressions)


def _frontal(params, resolution: int = R, yaw: float = 0.0) -> dict[str, torch.Tensor]:
    n = len(params)
    return render(params, labels_at(torch.full((n,), yaw), torch.zeros(n)), resolution)


def _region(params, index: int, point: tuple[float, float, float], half: tuple[int, int], resolution: int = R):
    """(row, col) slices of a box of half sizes ``half`` (pixels: rows, cols) around a head-frame point of head
    ``index``, seen by the frontal camera."""
    scale = float(params.scale[index])
    cam2world, intrinsics = split_labels(labels_at(torch.zeros(1), torch.zeros(1)))
    world = torch.tensor(point) * scale
    camera = cam2world[0, :3, :3].T @ (world - cam2world[0, :3, 3])
    u = intrinsics[0, 0, 0] * camera[0] / camera[2] + intrinsics[0, 0, 2]
    v = intrinsics[0, 1, 1] * camera[1] / camera[2] + intrinsics[0, 1, 2]
    row, col = int(v * resolution), int(u * resolution)
    return slice(row - half[0], row + half[0] + 1), slice(col - half[1], col + half[1] + 1)


def _regions(params, index: int = 0) -> dict[str, tuple[slice, slice]]:
    eye_x, eye_y = float(params.eye_x[index]), float(params.eye_y[index])
    return {
        "eye": _region(params, index, (eye_x, eye_y, EYE_FRONT), (2, 3)),
        "mouth": _region(params, index, (0.0, float(params.mouth_y[index]), LIP_Z), (2, 4)),
        "forehead": _region(params, index, (0.0, 0.115, 0.16), (2, 4)),
        "chin": _region(params, index, (0.0, -0.165, 0.13), (2, 4)),
        "hair": _region(params, index, (0.0, 0.215, 0.1), (1, 5)),
    }


def _diff(a: torch.Tensor, b: torch.Tensor, box) -> float:
    """Mean absolute difference (in [0, 1] colour units) of two (3, H, W) images inside a box."""
    return float((a[:, box[0], box[1]] - b[:, box[0], box[1]]).abs().mean() / 2)


def test_outputs_shapes_and_consistency():
    world = FaceWorld(0)
    heads = world.sample(4, seed=2)
    cameras = world.sample_cameras(4, seed=2)
    out = world.render(heads, cameras, R)
    image, mask, depth = out["image"], out["mask"], out["depth"]
    assert image.shape == (4, 3, R, R) and mask.shape == (4, 1, R, R) and depth.shape == (4, 1, R, R)
    assert image.min() >= -1 and image.max() <= 1 and mask.min() >= 0 and mask.max() <= 1
    empty = mask[:, 0] == 0
    background = torch.tensor(BACKGROUND)[:, None] * 2 - 1
    assert torch.allclose(image.permute(1, 0, 2, 3)[:, empty], background.expand(3, int(empty.sum())), atol=1e-6)
    assert torch.all(depth[:, 0][empty] == RAY_END)
    head = mask[:, 0] > 0.99
    assert head.float().mean() > 0.3
    assert depth[:, 0][head].min() > RAY_START and depth[:, 0][head].max() < RAY_END
    assert depth[:, 0][head].min() > 2.35 and depth[:, 0][head].max() < 3.0  # the head sits around radius 2.7
    again = world.render(heads, cameras, R)
    assert all(torch.equal(out[k], again[k]) for k in out)


def test_head_fills_most_of_the_frame():
    out = _frontal(FaceWorld(0).sample(12, seed=0).params())
    columns = (out["mask"][:, 0] > 0.5).any(dim=1).float().mean(dim=1)
    assert 0.55 < float(columns.mean()) < 0.75
    rows = (out["mask"][:, 0] > 0.5).any(dim=2)
    assert not rows[:, -1].logical_not().any()  # the neck reaches the bottom edge


def test_symmetric_identity_renders_symmetric():
    out = _frontal(_heads([dict(NEUTRAL, smiling=3, eyeglasses=3, bangs=2), dict(NEUTRAL, gender=1, beard=3)]))
    image = out["image"]
    assert float((image - image.flip(-1)).abs().mean()) < 0.01
    asymmetric = _heads([NEUTRAL], expressions=3 * expression_basis()[:, CONTROLS.index("jaw_side")][None])
    image = _frontal(asymmetric)["image"]
    assert float((image - image.flip(-1)).abs().mean()) > 0.003


def test_identities_with_the_same_levels_differ():
    a, b = _frontal(_heads([NEUTRAL], 1))["image"], _frontal(_heads([NEUTRAL], 2))["image"]
    assert float((a - b).abs().mean() / 2) > 0.02


def _sweep(attr: str, levels, gender: int = 0, identity_seed: int = 3):
    params = _heads([{**NEUTRAL, "gender": gender, attr: level} for level in levels], identity_seed)
    return params, _frontal(params)["image"]


def test_attributes_change_their_region():
    cases = [("eyeglasses", 0, "eye", "mouth"), ("beard", 1, "chin", "forehead"), ("bangs", 0, "forehead", "mouth"),
             ("smiling", 0, "mouth", "forehead")]
    for attr, gender, changed, unchanged in cases:
        params, images = _sweep(attr, [0, 5], gender)
        boxes = _regions(params)
        assert _diff(images[0], images[1], boxes[changed]) > 0.08, attr
        assert _diff(images[0], images[1], boxes[unchanged]) < 0.02, attr
    params, images = _sweep("eyeglasses", [0, 5])
    eye = _regions(params)["eye"]
    assert images[1][:, eye[0], eye[1]].mean() < images[0][:, eye[0], eye[1]].mean() - 0.3  # dark lenses


def test_age_greys_the_hair():
    # Pick a dark, saturated hair colour, where grey shows most.
    seed = next(s for s in range(100) if float(_heads([NEUTRAL], s).hair_colour.sum()) < 0.6)
    params, images = _sweep("age", [0, 5], identity_seed=seed)
    hair = _regions(params)["hair"]
    grey = torch.tensor(GREY_HAIR)[:, None, None] * 2 - 1
    young, old = (((im[:, hair[0], hair[1]] - grey).abs().mean()) for im in images)
    assert old < young - 0.2


def test_every_level_step_is_visible():
    for attr in ATTRIBUTES:
        gender = 1 if attr == "beard" else 0
        _, images = _sweep(attr, list(range(NUM_LEVELS[attr])), gender)
        changed = ((images[1:] - images[:-1]).abs().amax(dim=1) / 2 > 0.05).flatten(1).sum(dim=1)
        assert int(changed.min()) >= 8, (attr, changed)  # pixels of 64^2 that change clearly at each step


def test_expression_moves_mouth_and_eyes():
    basis = expression_basis()
    codes = torch.stack([torch.zeros(50), 3 * basis[:, CONTROLS.index("jaw_open")],
                         3 * basis[:, CONTROLS.index("eye_close")]])
    params = _heads([NEUTRAL] * 3, expressions=codes)
    images = _frontal(params)["image"]
    boxes = _regions(params)
    assert _diff(images[0], images[1], boxes["mouth"]) > 0.05
    assert _diff(images[0], images[2], boxes["eye"]) > 0.05
    assert _diff(images[0], images[1], boxes["hair"]) < 0.01 and _diff(images[0], images[2], boxes["hair"]) < 0.01


def test_high_resolution():
    out = _frontal(_heads([dict(NEUTRAL, eyeglasses=2)]), resolution=512)
    assert out["image"].shape == (1, 3, 512, 512) and torch.isfinite(out["depth"]).all()
    low = _frontal(_heads([dict(NEUTRAL, eyeglasses=2)]), resolution=128)["image"]
    pooled = torch.nn.functional.avg_pool2d(out["image"], 4)
    assert float((pooled - low).abs().mean()) < 0.03


@pytest.mark.gpu
def test_cuda_renders_like_cpu():
    world = FaceWorld(0)
    heads, cameras = world.sample(4, seed=1), world.sample_cameras(4, seed=1)
    cpu, gpu = world.render(heads, cameras, R), world.render(heads, cameras, R, device="cuda")
    for key in cpu:
        assert float((cpu[key] - gpu[key].cpu()).abs().mean()) < 2e-3, key
