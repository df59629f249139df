"""eg3d.frames: the one implementation of stills, grids, orbits (with plane reuse) and morphs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eg3d.frames import FrameRenderer, display, grid_columns, more_depth_samples, morph_codes, slerp
from helpers import video_frames
from texface.media import tile


def test_orbit_with_reused_planes_equals_per_frame_renders(small):
    G, ws, labels = small
    codes = torch.cat([ws, ws[:1]])  # 3 codes in batches of 2: a full and a partial batch
    renderer = FrameRenderer(G, batch_size=2, deterministic=True)
    stacks = list(renderer.orbit(codes, labels))
    assert len(stacks) == len(labels)
    for stack, c in zip(stacks, labels):
        tiles = renderer.render(codes, c.expand(3, 25))  # (3, H, W, 3), from synthesis
        size = tiles.shape[1]
        np.testing.assert_array_equal(stack, tiles)
        frame = tile(stack, grid_columns(len(codes)))  # the grid video's frame
        assert frame.shape == (2 * size, 2 * size, 3)
        for i, (row, col) in enumerate([(0, 0), (0, 1), (1, 0)]):
            np.testing.assert_array_equal(frame[row * size:(row + 1) * size, col * size:(col + 1) * size], tiles[i])


def test_orbit_computes_each_codes_planes_once(small, monkeypatch):
    G, ws, _ = small
    calls = []
    planes = G.planes

    def counting(ws, **kwargs):
        calls.append(len(ws))
        return planes(ws, **kwargs)

    monkeypatch.setattr(G, "planes", counting)
    list(FrameRenderer(G, batch_size=4).orbit(ws, 5))
    assert calls == [len(ws)]  # one backbone pass for 5 frames of 2 codes


def test_orbit_video_writes_the_grid_and_each_code_from_one_pass(small, tmp_path):
    G, ws, labels = small
    renderer = FrameRenderer(G, deterministic=True)
    paths = renderer.orbit_video(ws, tmp_path / "grid.mp4", each=[tmp_path / "a.mp4", tmp_path / "b.mp4"],
                                 cameras=labels, fps=4)
    assert paths == [tmp_path / "grid.mp4", tmp_path / "a.mp4", tmp_path / "b.mp4"]
    grid, a = video_frames(paths[0]), video_frames(paths[1])
    assert len(grid) == len(a) == 3
    size = a[0].shape[0]
    assert grid[0].shape == (size, 2 * size, 3)  # 2 codes: one row of 2
    assert np.abs(grid[1][:, :size].astype(int) - a[1]).mean() < 3  # the same frame, up to H.264


def test_display_of_depth_is_grey_and_min_max_scaled(small):
    G, ws, labels = small
    with torch.no_grad():
        out = G.synthesis(ws, labels[:2], noise_mode="const", deterministic=True)
    shown = display(out, "image_depth")
    assert shown.shape == out["image_depth"].shape
    flat = shown.flatten(1)
    torch.testing.assert_close(flat.min(1).values, torch.full((2,), -1.0))
    torch.testing.assert_close(flat.max(1).values, torch.full((2,), 1.0))
    near = out["image_depth"].flatten(1).argmin(1)  # the nearest point is the brightest
    assert (flat.gather(1, near[:, None]) == 1).all()
    with pytest.raises(ValueError, match="image_mode must be one of"):
        display(out, "normals")


def test_morph_codes_go_from_a_to_b(small):
    _, ws, _ = small
    path = morph_codes(ws[0], ws[1], 5)
    assert path.shape == (5, *ws.shape[1:])
    torch.testing.assert_close(path[0], ws[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(path[-1], ws[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(path[2], slerp(ws[0], ws[1], 0.5), rtol=0, atol=1e-6)


def test_slerp_against_the_closed_form():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 14, 8, generator=gen), torch.randn(3, 14, 8, generator=gen)
    torch.testing.assert_close(slerp(a, b, 0.0), a, rtol=0, atol=1e-6)
    torch.testing.assert_close(slerp(a, b, 1.0), b, rtol=0, atol=1e-6)
    # Orthogonal unit vectors: the midpoint is (a + b) / sqrt(2), a unit vector.
    e0, e1 = torch.eye(4)[0], torch.eye(4)[1]
    torch.testing.assert_close(slerp(e0, e1, 0.5), (e0 + e1) / math.sqrt(2), rtol=0, atol=1e-7)
    # Equal norms stay equal along the path, and the angle to a grows linearly in t.
    u = 3 * torch.nn.functional.normalize(a.double(), dim=-1)
    v = 3 * torch.nn.functional.normalize(b.double(), dim=-1)
    omega = torch.arccos((u * v).sum(-1) / 9)
    for t in (0.25, 0.6):
        w = slerp(u, v, t)
        torch.testing.assert_close(w.norm(dim=-1), torch.full_like(omega, 3.0), rtol=0, atol=1e-9)
        angle = torch.arccos(((w * u).sum(-1) / 9).clamp(-1, 1))
        torch.testing.assert_close(angle, t * omega, rtol=0, atol=1e-6)
    # Parallel vectors fall back to linear interpolation.
    torch.testing.assert_close(slerp(e0, 2 * e0, 0.5), 1.5 * e0, rtol=0, atol=1e-7)


def test_more_depth_samples_multiplies_and_restores():
    from types import SimpleNamespace

    kwargs = {"depth_resolution": 48, "depth_resolution_importance": 24, "ray_start": 2.25}
    G = SimpleNamespace(rendering_kwargs=kwargs)
    with more_depth_samples(G, 2):
        assert G.rendering_kwargs == {**kwargs, "depth_resolution": 96, "depth_resolution_importance": 48}
    assert G.rendering_kwargs is kwargs and kwargs["depth_resolution"] == 48


