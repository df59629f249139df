"""The density/colour field: it stays in EG3D's box, and volume rendering it reproduces the sphere-traced images."""
from __future__ import annotations

import torch

from eg3d.camera import split_labels
from eg3d.renderer import RaySampler
from faceworld import BACKGROUND, BETA, RAY_END, RAY_START, FaceWorld, field, head_sdf, laplace_density, surface


def _heads(n: int = 3, seed: int = 5):
    world = FaceWorld(0)
    return world, world.sample(n, seed=seed).params(), world.sample_cameras(n, seed=seed)


def test_field_shapes_and_ranges():
    _, params, _ = _heads()
    points = torch.rand(3, 500, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    sigma, rgb = field(params, points)
    assert sigma.shape == (3, 500, 1) and rgb.shape == (3, 500, 3)
    assert sigma.min() >= 0 and sigma.max() <= 1 / BETA + 1e-3
    assert rgb.min() >= 0 and rgb.max() <= 1
    centre = field(params, torch.tensor([0.0, 0.05, 0.0]).expand(3, 1, 3))[0]
    assert torch.allclose(centre, torch.full_like(centre, 1 / BETA))  # deep inside: 1/beta


def test_field_matches_the_flat_sdf():
    _, params, _ = _heads()
    points = torch.rand(3, 200, 3, generator=torch.Generator().manual_seed(1)) * 0.5 - 0.25
    columns = params.columns(1)
    exact = head_sdf(columns, points[..., 0], points[..., 1], points[..., 2])
    tetra, normal, _ = surface(columns, points[..., 0], points[..., 1], points[..., 2])
    assert (exact - tetra).abs().max() < 5e-4 and (exact - tetra).abs().median() < 2e-5  # O(h^2), h = 5e-4
    assert torch.allclose(normal.norm(dim=-1), torch.ones(3, 200), atol=1e-4)
    flat = head_sdf(params.index(torch.tensor([1] * 200)), points[1, :, 0], points[1, :, 1], points[1, :, 2])
    assert torch.allclose(flat, exact[1], atol=1e-6)
    assert torch.allclose(field(params, points)[0][..., 0], laplace_density(tetra))


def test_density_vanishes_outside_the_box():
    _, params, _ = _heads()
    g = torch.Generator().manual_seed(2)
    faces = torch.rand(3, 3000, 3, generator=g) - 0.5  # points on the six faces of [-0.5, 0.5]^3
    axis = torch.randint(0, 3, (3, 3000), generator=g)
    side = torch.randint(0, 2, (3, 3000), generator=g).float() - 0.5
    faces.scatter_(2, axis[..., None], side[..., None])
    outside = faces * 1.2
    for points in (faces, outside):
        assert field(params, points)[0].max() < 1e-3


def test_volume_rendering_the_field_matches_render():
    world, params, cameras = _heads()
    resolution = 64
    out = world.render(params, cameras, resolution)
    cam2world, intrinsics = split_labels(cameras)
    origins, directions = RaySampler()(cam2world, intrinsics, resolution)
    rays = torch.cat([torch.arange(resolution * 20, resolution * 21), torch.arange(resolution * 34, resolution * 35)])
    steps = 1536
    t = torch.linspace(RAY_START, RAY_END, steps)
    points = origins[:, rays, None] + t[:, None] * directions[:, rays, None]  # (B, rays, steps, 3)
    b, n = points.shape[:2]
    sigma, rgb = field(params, points.reshape(b, -1, 3))
    sigma, rgb = sigma.reshape(b, n, steps), rgb.reshape(b, n, steps, 3)
    alpha = 1 - torch.exp(-0.5 * (sigma[..., 1:] + sigma[..., :-1]) * (t[1] - t[0]))
    transmittance = torch.cumprod(torch.cat([torch.ones(b, n, 1), 1 - alpha], dim=-1), dim=-1)[..., :-1]
    weights = alpha * transmittance
    opacity = weights.sum(-1)
    colour = (weights[..., None] * 0.5 * (rgb[..., 1:, :] + rgb[..., :-1, :])).sum(-2)
    colour = colour + (1 - opacity)[..., None] * torch.tensor(BACKGROUND)
    depth = (weights * 0.5 * (t[1:] + t[:-1])).sum(-1) / opacity.clamp_min(1e-8)

    image = out["image"].flatten(2)[:, :, rays].permute(0, 2, 1) * 0.5 + 0.5
    mask = out["mask"].flatten(1)[:, rays]
    error = (colour - image).abs().amax(-1)
    assert error.mean() < 0.015 and error.flatten().quantile(0.9) < 0.03
    assert (opacity - mask).abs().mean() < 0.01 and (opacity - mask).abs().max() < 0.15
    inside = mask > 0.99
    assert inside.float().mean() > 0.3
    assert (depth - out["depth"].flatten(1)[:, rays])[inside].abs().median() < 0.004
