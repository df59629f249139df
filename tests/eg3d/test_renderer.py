"""Rays, tri-plane lookups, the OSG decoder and the volume renderer, against the fixtures, float64 loop
re-implementations and analytic cases."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import assert_close, reference_fixture
from safetensors.torch import load_file
from torch import nn

from eg3d.camera import camera_labels, fov_to_intrinsics, look_at, split_labels
from eg3d.renderer import (ImportanceRenderer, OSGDecoder, RaySampler, importance_depths, ray_box_limits,
                           sample_from_planes, sample_pdf, stratified_depths)

OPTIONS = dict(ray_start=2.25, ray_end=3.3, depth_resolution=8, depth_resolution_importance=6, box_warp=1,
               disparity_space_sampling=False, clamp_mode="softplus")


def _frontal_rays(resolution, *, distance=2.7, batch=1):
    """Rays of a camera at (0, 0, distance) looking at the origin (forward = -z)."""
    cam2world = look_at(torch.tensor([[0.0, 0.0, distance]] * batch), (0.0, 0.0, 0.0))
    return RaySampler()(cam2world, fov_to_intrinsics(18.837).expand(batch, 3, 3), resolution)


def _orbit_rays(resolution):
    cam2world = torch.cat([look_at(torch.tensor([[0.4, -0.3, 2.6]]), (0.0, 0.0, 0.2)),
                           look_at(torch.tensor([[-1.0, 0.5, 2.4]]), (0.0, 0.0, 0.2))])
    return RaySampler()(cam2world, fov_to_intrinsics(18.837).expand(2, 3, 3), resolution)


class ConstantField(nn.Module):
    """A decoder with the same raw density and colour everywhere."""

    def __init__(self, density, colour):
        super().__init__()
        self.density, self.colour = density, torch.tensor(colour)

    def forward(self, features, directions):
        batch, _, n_points, _ = features.shape
        return {"sigma": torch.full((batch, n_points, 1), float(self.density)),
                "rgb": self.colour.expand(batch, n_points, len(self.colour))}


# ---------------------------------------------------------------- rays


@pytest.mark.parametrize("name", ["tiny", "mid"])
def test_rays_match_fixtures(name):
    folder = reference_fixture(f"eg3d_reference/{name}")
    meta = json.loads((folder / "meta.json").read_text())
    io = load_file(folder / "io.safetensors")
    origins, directions = RaySampler()(*split_labels(io["c"]), meta["neural_rendering_resolution"])
    assert_close(origins, io["ray_origins"], atol=1e-6, rel=1e-6, name=f"{name}/ray_origins")
    assert_close(directions, io["ray_directions"], atol=1e-6, rel=1e-6, name=f"{name}/ray_directions")


def test_rays_analytic():
    res = 5
    cam2world = look_at(torch.tensor([[0.3, -0.2, 2.5]]), (0.0, 0.1, 0.2))
    focal = 3.0
    intrinsics = torch.tensor([[[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]]])
    origins, directions = RaySampler()(cam2world, intrinsics, res)
    assert origins.shape == directions.shape == (1, res * res, 3)
    assert torch.equal(origins, cam2world[:, :3, 3].expand(1, res * res, 3))
    assert torch.allclose(directions.norm(dim=-1), torch.ones(1, res * res), atol=1e-6)
    rotation = cam2world[0, :3, :3].double()
    for i, j in [(2, 2), (0, 0), (0, 4), (3, 1)]:  # (row, column)
        camera_dir = torch.tensor([((j + 0.5) / res - 0.5) / focal, ((i + 0.5) / res - 0.5) / focal, 1.0],
                                  dtype=torch.float64)
        expected = rotation @ (camera_dir / camera_dir.norm())
        assert torch.allclose(directions[0, i * res + j].double(), expected, atol=1e-6), (i, j)
    # Skew shifts x by -skew*(v - cy)/(fx*fy).
    skewed = intrinsics.clone()
    skewed[0, 0, 1] = 0.4
    _, skew_dirs = RaySampler()(cam2world, skewed, res)
    camera_dir = torch.tensor([((0.5) / res - 0.5) / focal - 0.4 * ((0.5 / res) - 0.5) / focal ** 2,
                               ((0.5) / res - 0.5) / focal, 1.0], dtype=torch.float64)
    assert torch.allclose(skew_dirs[0, 0].double(), rotation @ (camera_dir / camera_dir.norm()), atol=1e-6)


def test_ray_sampler_rejects_bad_input():
    cam2world = torch.eye(4)[None]
    with pytest.raises(ValueError, match="intrinsics"):
        RaySampler()(cam2world, torch.eye(3), 4)
    with pytest.raises(ValueError, match="resolution"):
        RaySampler()(cam2world, torch.eye(3)[None], 0)
    with pytest.raises(ValueError, match="cam2world"):
        RaySampler()(torch.eye(4), torch.eye(3)[None], 4)


# ---------------------------------------------------------------- tri-planes and decoder


def _bilinear(plane: np.ndarray, gx: float, gy: float) -> np.ndarray:
    """grid_sample(align_corners=False, zeros padding) of one (C, H, W) plane at one point, in float64."""
    channels, height, width = plane.shape
    px, py = ((gx + 1) * width - 1) / 2, ((gy + 1) * height - 1) / 2
    x0, y0 = math.floor(px), math.floor(py)
    out = np.zeros(channels)
    for x, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
        for y, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
            if 0 <= x < width and 0 <= y < height:
                out += wx * wy * plane[:, y, x]
    return out


def _plane_features(planes: np.ndarray, point: np.ndarray, box_warp: float) -> np.ndarray:
    """(3, C) features of one point; planes (3, C, H, W). Planes 0, 1, 2 read (x, y), (x, z), (z, x)."""
    x, y, z = point * 2 / box_warp
    return np.stack([_bilinear(planes[0], x, y), _bilinear(planes[1], x, z), _bilinear(planes[2], z, x)])


def test_sample_from_planes_matches_hand_bilinear():
    gen = torch.Generator().manual_seed(0)
    planes = torch.randn(2, 3, 5, 7, 9, generator=gen)  # H != W catches swapped axes
    box_warp = 1.5
    coords = (torch.rand(2, 200, 3, generator=gen) * 2 - 1) * 0.95  # about a third outside the box
    coords[0, 0] = torch.tensor([1.0, 0.0, 0.0])  # x*2/box_warp = 1.33: every plane reads past its edge
    coords[0, 1] = torch.tensor([0.0, 1.0, 0.0])  # y past the edge: only plane 0 reads zeros
    features = sample_from_planes(planes, coords, box_warp=box_warp)
    assert features.shape == (2, 3, 200, 5)
    expected = np.stack([np.stack([_plane_features(planes[b].double().numpy(), coords[b, m].double().numpy(),
                                                   box_warp) for m in range(200)], axis=1) for b in range(2)])
    assert_close(features, torch.from_numpy(expected), atol=2e-6, rel=1e-6, name="features")
    assert torch.all(features[0, :, 0] == 0)
    assert torch.all(features[0, 0, 1] == 0) and torch.all(features[0, 1:, 1] != 0)
    with pytest.raises(ValueError, match="planes"):
        sample_from_planes(planes[:, :2], coords, box_warp=1)


@pytest.mark.parametrize("lr_mul", [1.0, 0.5])
def test_osg_decoder_matches_float64(lr_mul):
    torch.manual_seed(0)
    decoder = OSGDecoder(8, hidden_dim=16, decoder_lr_mul=lr_mul, decoder_output_dim=6)
    assert {k: tuple(v.shape) for k, v in decoder.state_dict().items()} == {
        "net.0.weight": (16, 8), "net.0.bias": (16,), "net.2.weight": (7, 16), "net.2.bias": (7,)}
    with torch.no_grad():
        for p in decoder.parameters():
            p.normal_()
    features = torch.randn(2, 3, 50, 8)
    out = decoder(features, torch.zeros(2, 50, 3))
    assert out["sigma"].shape == (2, 50, 1) and out["rgb"].shape == (2, 50, 6)

    p = {k: v.double().numpy() for k, v in decoder.state_dict().items()}
    x = features.double().numpy().mean(1)
    hidden = x @ (p["net.0.weight"] * lr_mul / math.sqrt(8)).T + p["net.0.bias"] * lr_mul
    hidden = np.log1p(np.exp(hidden))
    raw = hidden @ (p["net.2.weight"] * lr_mul / math.sqrt(16)).T + p["net.2.bias"] * lr_mul
    assert_close(out["sigma"], torch.from_numpy(raw[..., :1]), atol=1e-5, rel=1e-6, name="sigma")
    rgb = 1.002 / (1 + np.exp(-raw[..., 1:])) - 0.001
    assert_close(out["rgb"], torch.from_numpy(rgb), atol=1e-6, rel=1e-6, name="rgb")
    assert out["rgb"].min() >= -0.001 and out["rgb"].max() <= 1.001


# ---------------------------------------------------------------- depth sampling


def _inverse_cdf_reference(bins: np.ndarray, weights: np.ndarray, u: np.ndarray, eps=1e-5) -> np.ndarray:
    """Loop version: pdf from weights+eps, right-sided search, unit denominator for CDF steps below eps."""
    out = np.zeros(u.shape)
    for r in range(bins.shape[0]):
        w = weights[r] + eps
        cdf = [0.0]
        for value in w / w.sum():
            cdf.append(cdf[-1] + value)
        n_bins = len(w)
        for s, x in enumerate(u[r]):
            k = sum(1 for c in cdf if c <= x)  # first index with cdf > x
            lo, hi = max(k - 1, 0), min(k, n_bins)
            step = cdf[hi] - cdf[lo]
            if step < eps:
                step = 1.0
            out[r, s] = bins[r, lo] + (x - cdf[lo]) / step * (bins[r, hi] - bins[r, lo])
    return out


def test_sample_pdf_matches_loop_reference():
    gen = torch.Generator().manual_seed(1)
    bins = torch.sort(torch.rand(6, 9, generator=gen) * 3, dim=1).values
    weights = torch.rand(6, 8, generator=gen)
    weights[0] = 0.0  # uniform pdf
    weights[1, 2:6] = 0.0  # empty bins
    weights[2] = torch.tensor([0, 0, 0, 5.0, 0, 0, 0, 0])  # one spike
    u = np.linspace(0, 1, 7)
    det = sample_pdf(bins, weights, 7, deterministic=True)
    expected = _inverse_cdf_reference(bins.double().numpy(), weights.double().numpy(), np.tile(u, (6, 1)))
    assert_close(det, torch.from_numpy(expected), atol=1e-5, rel=1e-6, name="deterministic")
    assert torch.all(det >= bins[:, :1]) and torch.all(det <= bins[:, -1:])
    assert torch.allclose(det[:, 0], bins[:, 0]) and torch.allclose(det[:, -1], bins[:, -1])
    uniform = np.interp(u, np.linspace(0, 1, 9), bins[0].numpy())  # a flat pdf interpolates the bin edges
    assert torch.allclose(det[0], torch.from_numpy(uniform).float(), atol=1e-5)

    torch.manual_seed(7)
    random = sample_pdf(bins, weights, 5)
    torch.manual_seed(7)
    u_random = torch.rand(6, 5).double().numpy()
    expected = _inverse_cdf_reference(bins.double().numpy(), weights.double().numpy(), u_random)
    assert_close(random, torch.from_numpy(expected), atol=1e-5, rel=1e-6, name="random")


def _smoothed_weights_reference(w: np.ndarray) -> np.ndarray:
    """EG3D smoothing written out: max over each pair of neighbours (edges keep their single value), mean of
    consecutive maxima, +0.01."""
    n = len(w)
    maxima = [max(w[max(k - 1, 0):min(k + 1, n)]) for k in range(n + 1)]
    return np.array([(maxima[k] + maxima[k + 1]) / 2 + 0.01 for k in range(n)])


def test_importance_depths_match_loop_reference():
    gen = torch.Generator().manual_seed(2)
    batch, rays, coarse, fine = 2, 5, 10, 7
    depths = torch.sort(2.25 + torch.rand(batch, rays, coarse, 1, generator=gen) * 1.05, dim=2).values
    weights = torch.rand(batch, rays, coarse - 1, 1, generator=gen) ** 4
    out = importance_depths(depths, weights, fine, deterministic=True)
    assert out.shape == (batch, rays, fine, 1)

    d = depths.double().numpy().reshape(-1, coarse)
    w = weights.double().numpy().reshape(-1, coarse - 1)
    expected = np.zeros((batch * rays, fine))
    for r in range(batch * rays):
        mids = (d[r, :-1] + d[r, 1:]) / 2
        smooth = _smoothed_weights_reference(w[r])
        # the pdf covers the first coarse-2 midpoints with the smoothed values 1..coarse-3
        expected[r] = _inverse_cdf_reference(mids[None, :coarse - 2], smooth[None, 1:-1],
                                             np.linspace(0, 1, fine)[None])[0]
    expected = torch.from_numpy(expected).reshape(batch, rays, fine, 1)
    assert_close(out, expected, atol=1e-5, rel=1e-6, name="fine")

    torch.manual_seed(3)
    random = importance_depths(depths, weights, fine)
    mids = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    assert torch.all(random >= mids[:, :, :1]) and torch.all(random <= mids[:, :, -2:-1])
    assert not torch.allclose(random, out)


def test_stratified_depths():
    origins = torch.zeros(2, 3, 3)
    det = stratified_depths(origins, 2.0, 3.0, 5, deterministic=True)
    assert torch.equal(det, torch.linspace(2.0, 3.0, 5).reshape(1, 1, 5, 1).expand(2, 3, 5, 1))
    torch.manual_seed(0)
    jittered = stratified_depths(origins, 2.0, 3.0, 5)
    offset = jittered - det
    assert torch.all(offset >= 0) and torch.all(offset < 0.25) and offset.std() > 0.02
    disparity = stratified_depths(origins, 2.0, 3.0, 5, disparity_space=True, deterministic=True)
    expected = 1 / torch.linspace(1 / 2.0, 1 / 3.0, 5, dtype=torch.float64)
    assert torch.allclose(disparity[0, 0, :, 0].double(), expected, atol=1e-6)


# ---------------------------------------------------------------- full renderer


def _march_reference(t, sigma, colour):
    """Midpoint marching of one ray in float64: composite (C,), weighted depth (or nan), weight sum."""
    transmittance, composite, depth_acc, total = 1.0, np.zeros(colour.shape[1]), 0.0, 0.0
    for k in range(len(t) - 1):
        density = np.log1p(np.exp((sigma[k] + sigma[k + 1]) / 2 - 1))
        alpha = 1 - np.exp(-density * (t[k + 1] - t[k]))
        weight = alpha * transmittance
        transmittance *= 1 - alpha + 1e-10
        composite += weight * (colour[k] + colour[k + 1]) / 2
        depth_acc += weight * (t[k] + t[k + 1]) / 2
        total += weight
    return composite, depth_acc / total if total > 0 else math.nan, total


def _render_reference(planes, decoder, origins, directions, options):
    """Deterministic EG3D rendering of every ray with python loops in float64 (README rule)."""
    p = {k: v.double().numpy() for k, v in decoder.state_dict().items()}
    lr = decoder.net[0].weight_gain * math.sqrt(decoder.net[0].in_features)

    def field(points):
        feats = np.stack([_plane_features(planes_np, q, options["box_warp"]).mean(0) for q in points])
        hidden = np.log1p(np.exp(feats @ (p["net.0.weight"] * lr / math.sqrt(feats.shape[1])).T
                                 + p["net.0.bias"] * lr))
        raw = hidden @ (p["net.2.weight"] * lr / math.sqrt(hidden.shape[1])).T + p["net.2.bias"] * lr
        return raw[:, 0], 1.002 / (1 + np.exp(-raw[:, 1:])) - 0.001

    n_coarse, n_fine = options["depth_resolution"], options["depth_resolution_importance"]
    results, all_depths = [], []
    for b in range(origins.shape[0]):
        planes_np = planes[b].double().numpy()
        for r in range(origins.shape[1]):
            o, d = origins[b, r].double().numpy(), directions[b, r].double().numpy()
            t = np.linspace(options["ray_start"], options["ray_end"], n_coarse)
            sigma, colour = field(o + t[:, None] * d)
            weights = []
            transmittance = 1.0
            for k in range(n_coarse - 1):
                alpha = 1 - np.exp(-np.log1p(np.exp((sigma[k] + sigma[k + 1]) / 2 - 1)) * (t[k + 1] - t[k]))
                weights.append(alpha * transmittance)
                transmittance *= 1 - alpha + 1e-10
            mids = (t[:-1] + t[1:]) / 2
            smooth = _smoothed_weights_reference(np.array(weights))
            u = np.linspace(0, 1, n_fine)[None]
            t_fine = _inverse_cdf_reference(mids[None, :-1], smooth[None, 1:-1], u)[0]
            sigma_fine, colour_fine = field(o + t_fine[:, None] * d)
            order = np.argsort(np.concatenate([t, t_fine]), kind="stable")
            t_all = np.concatenate([t, t_fine])[order]
            results.append(_march_reference(t_all, np.concatenate([sigma, sigma_fine])[order],
                                            np.concatenate([colour, colour_fine])[order]))
            all_depths.append(t_all)
    lo, hi = min(x.min() for x in all_depths), max(x.max() for x in all_depths)
    shape = origins.shape[:2]
    features = torch.tensor(np.stack([x[0] for x in results]) * 2 - 1).reshape(*shape, -1)
    depth = [min(max(x[1], lo), hi) if not math.isnan(x[1]) else hi for x in results]
    depth = torch.tensor(depth).reshape(*shape, 1)
    weights_sum = torch.tensor([x[2] for x in results]).reshape(*shape, 1)
    return features, depth, weights_sum


def test_deterministic_render_matches_float64_loops():
    gen = torch.Generator().manual_seed(4)
    planes = torch.randn(2, 3, 8, 12, 12, generator=gen) * 2
    decoder = OSGDecoder(8, hidden_dim=16, decoder_output_dim=5)
    with torch.no_grad():
        for p in decoder.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
        decoder.net[2].bias[0] += 4.0  # dense enough for the weights to matter
    origins, directions = _orbit_rays(4)
    features, depth, weights_sum = ImportanceRenderer()(planes, decoder, origins, directions, OPTIONS,
                                                        deterministic=True)
    assert features.shape == (2, 16, 5) and depth.shape == weights_sum.shape == (2, 16, 1)
    ref_features, ref_depth, ref_weights = _render_reference(planes, decoder, origins, directions, OPTIONS)
    assert 0.05 < weights_sum.min() and weights_sum.max() < 0.999  # a partly transparent, non-trivial field
    assert_close(features, ref_features, atol=2e-5, rel=1e-5, name="features")
    assert_close(depth, ref_depth, atol=2e-5, rel=1e-5, name="depth")
    assert_close(weights_sum, ref_weights, atol=2e-5, rel=1e-5, name="weights_sum")
    again = ImportanceRenderer()(planes, decoder, origins, directions, OPTIONS, deterministic=True)
    assert all(torch.equal(a, b) for a, b in zip(again, (features, depth, weights_sum)))


@pytest.mark.parametrize("n_importance", [0, 6])
def test_constant_field_opacity_and_colour(n_importance):
    density, colour = 1.7, [0.2, 0.9, 0.5]
    options = {**OPTIONS, "depth_resolution_importance": n_importance}
    origins, directions = _frontal_rays(3, batch=2)
    planes = torch.zeros(2, 3, 4, 8, 8)
    features, depth, weights_sum = ImportanceRenderer()(planes, ConstantField(density, colour), origins,
                                                        directions, options, deterministic=True)
    length = options["ray_end"] - options["ray_start"]
    opacity = 1 - math.exp(-math.log1p(math.exp(density - 1)) * length)
    assert torch.allclose(weights_sum, torch.full_like(weights_sum, opacity), atol=1e-6)
    expected = torch.tensor(colour) * weights_sum * 2 - 1
    assert torch.allclose(features, expected, atol=1e-6)
    if n_importance == 0:  # uniform spacing: geometric weights over the interval midpoints
        q = math.exp(-math.log1p(math.exp(density - 1)) * length / 7)
        w = [(1 - q) * q ** k for k in range(7)]
        mids = [options["ray_start"] + (k + 0.5) * length / 7 for k in range(7)]
        expected_depth = sum(a * b for a, b in zip(w, mids)) / sum(w)
        assert torch.allclose(depth, torch.full_like(depth, expected_depth), atol=1e-5)

    white = ImportanceRenderer()(planes, ConstantField(density, colour), origins, directions,
                                 {**options, "white_back": True}, deterministic=True)[0]
    assert torch.allclose(white, (torch.tensor(colour) * weights_sum + 1 - weights_sum) * 2 - 1, atol=1e-6)


def test_ray_box_limits():
    origins = torch.tensor([[[0.0, 0.0, 3.0], [2.0, 0.1, 0.2], [0.0, 2.0, 3.0], [0.1, 0.2, 0.3], [0.0, 0.0, 3.0]]])
    directions = torch.tensor([[[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [1.0, 1.0, 1.0],
                                [0.3, 0.0, -1.0]]])
    directions = torch.nn.functional.normalize(directions, dim=-1)
    t_min, t_max = ray_box_limits(origins, directions, 1.0)
    root3 = math.sqrt(3)
    # Misses give (-1, -2) (ray 2 parallel to the box, ray 4 oblique); ray 3 starts inside: it enters behind.
    expected_min = torch.tensor([2.5, 1.5, -1.0, -0.6 * root3, -1.0])
    expected_max = torch.tensor([3.5, 2.5, -2.0, 0.2 * root3, -2.0])
    assert torch.allclose(t_min[0, :, 0], expected_min, atol=1e-6)
    assert torch.allclose(t_max[0, :, 0], expected_max, atol=1e-6)


def test_auto_limits_render_the_box_only():
    """ray_start = ray_end = 'auto': a constant field is integrated exactly over each ray's chord of the box;
    rays that miss the box get [first entry, last entry] of the rays that hit it."""
    density = 2.0
    origins, directions = _frontal_rays(9)
    box = 0.5  # the corner rays of the 9x9 frontal view miss it
    options = {**OPTIONS, "ray_start": "auto", "ray_end": "auto", "box_warp": box}
    _, depth, weights_sum = ImportanceRenderer()(torch.zeros(1, 3, 4, 8, 8), ConstantField(density, [1.0]),
                                                 origins, directions, options, deterministic=True)
    # Float64 chord of each ray: where it crosses the six face planes inside the face.
    o, d = origins[0].double(), directions[0].double()
    crossings = []
    for axis in range(3):
        for side in (-box / 2, box / 2):
            t = (side - o[:, axis]) / d[:, axis]
            point = o + t[:, None] * d
            on_face = (point.abs() <= box / 2 + 1e-12).all(-1)
            crossings.append(torch.where(on_face, t, torch.tensor(math.nan, dtype=torch.float64)))
    crossings = torch.stack(crossings, -1)  # (N, 6)
    hits = ~crossings.isnan().all(-1)
    assert 0 < hits.sum() < len(hits)
    entry = torch.where(crossings.isnan(), math.inf, crossings).amin(-1)
    exit_ = torch.where(crossings.isnan(), -math.inf, crossings).amax(-1)
    length = torch.where(hits, exit_ - entry, entry[hits].max() - entry[hits].min())
    sigma = math.log1p(math.exp(density - 1))
    assert torch.allclose(weights_sum[0, :, 0].double(), 1 - torch.exp(-sigma * length), atol=2e-6)
    assert torch.all(depth[0, hits, 0].double() >= entry[hits] - 1e-5)
    assert torch.all(depth[0, hits, 0].double() <= exit_[hits] + 1e-5)


def test_empty_space_depth_is_clamped_to_the_far_end():
    origins, directions = _frontal_rays(2)
    _, depth, weights_sum = ImportanceRenderer()(torch.zeros(1, 3, 4, 8, 8), ConstantField(-200.0, [0.5]),
                                                 origins, directions, OPTIONS, deterministic=True)
    assert torch.all(weights_sum == 0)
    assert torch.all(depth == OPTIONS["ray_end"])


def test_thin_slab_depth():
    """Planes that encode z (plane 1 along its height, plane 2 along its width) and a decoder that is dense
    only where the decoded z is in a thin slab: each ray's depth is where it crosses the slab."""
    size, z0, half = 64, 0.1, 0.01
    centres = (2 * torch.arange(size) + 1) / size - 1  # grid coordinate of pixel centres
    planes = torch.zeros(1, 3, 1, size, size)
    planes[0, 1, 0] = centres[:, None]  # plane 1 reads (x, z): z indexes height
    planes[0, 2, 0] = centres[None, :]  # plane 2 reads (z, x): z indexes width

    class Slab(nn.Module):
        def forward(self, features, directions):
            z = features.mean(1)[..., :1] * 1.5  # mean of (0, z, z)
            sigma = torch.where((z - z0).abs() < half, torch.tensor(300.0), torch.tensor(-30.0))
            return {"sigma": sigma, "rgb": torch.ones_like(z)}

    options = {**OPTIONS, "box_warp": 2, "depth_resolution": 24, "depth_resolution_importance": 24}
    origins, directions = _frontal_rays(5)
    _, depth, weights_sum = ImportanceRenderer()(planes, Slab(), origins, directions, options,
                                                 deterministic=True)
    t_slab = (2.7 - z0) / directions[..., 2:].abs()  # forward is -z
    spacing = (options["ray_end"] - options["ray_start"]) / (options["depth_resolution"] - 1)
    assert torch.all(weights_sum > 0.99)
    assert torch.all((depth - t_slab).abs() < spacing / 2)


def test_default_sampling_is_stochastic_and_seedable():
    gen = torch.Generator().manual_seed(5)
    planes = torch.randn(1, 3, 8, 8, 8, generator=gen)
    torch.manual_seed(0)
    decoder = OSGDecoder(8, hidden_dim=16, decoder_output_dim=3)
    origins, directions = _frontal_rays(4)
    renderer = ImportanceRenderer()
    torch.manual_seed(11)
    first = renderer(planes, decoder, origins, directions, OPTIONS)
    second = renderer(planes, decoder, origins, directions, OPTIONS)
    torch.manual_seed(11)
    repeat = renderer(planes, decoder, origins, directions, OPTIONS)
    det = renderer(planes, decoder, origins, directions, OPTIONS, deterministic=True)
    assert torch.equal(first[0], repeat[0]) and not torch.equal(first[0], second[0])
    assert not torch.equal(first[0], det[0])
    assert torch.allclose(first[0], det[0], atol=0.2)  # same field, different samples


def test_run_model_and_renderer_interface():
    renderer = ImportanceRenderer()
    assert len(renderer.state_dict()) == 0
    decoder = OSGDecoder(4, hidden_dim=8, decoder_output_dim=3)
    planes = torch.randn(2, 3, 4, 6, 6)
    coords = torch.rand(2, 10, 3) - 0.5
    out = renderer.run_model(planes, decoder, coords, torch.zeros(2, 10, 3), OPTIONS)
    direct = decoder(sample_from_planes(planes, coords, box_warp=1), None)
    assert torch.equal(out["sigma"], direct["sigma"]) and torch.equal(out["rgb"], direct["rgb"])
    torch.manual_seed(0)
    noisy = renderer.run_model(planes, decoder, coords, torch.zeros(2, 10, 3),
                               {**OPTIONS, "density_noise": 1.0})
    assert not torch.equal(noisy["sigma"], out["sigma"]) and torch.equal(noisy["rgb"], out["rgb"])

    origins, directions = _frontal_rays(2, batch=2)
    for bad, message in [({"clamp_mode": "relu"}, "clamp_mode"), ({"ray_start": "auto"}, "both be 'auto'"),
                         ({"ray_start": 3.5}, "ray_start < ray_end"),
                         ({"depth_resolution": 1}, "depth_resolution")]:
        with pytest.raises(ValueError, match=message):
            renderer(planes, decoder, origins, directions, {**OPTIONS, **bad})
    with pytest.raises(ValueError, match="box_warp"):
        renderer(planes, decoder, origins, directions, {k: v for k, v in OPTIONS.items() if k != "box_warp"})


def test_camera_label_to_render_round_trip():
    """A label built by eg3d.camera renders through RaySampler with the renderer's shapes."""
    cam2world = look_at(torch.tensor([[0.0, 0.0, 2.7]]), (0.0, 0.0, 0.2))
    c = camera_labels(cam2world, fov_to_intrinsics(18.837))
    origins, directions = RaySampler()(*split_labels(c), 3)
    decoder = OSGDecoder(4, hidden_dim=8, decoder_output_dim=32)
    features, depth, weights_sum = ImportanceRenderer()(torch.randn(1, 3, 4, 6, 6), decoder, origins,
                                                        directions, OPTIONS, deterministic=True)
    assert features.shape == (1, 9, 32) and depth.shape == weights_sum.shape == (1, 9, 1)
    assert torch.all((depth >= OPTIONS["ray_start"]) & (depth <= OPTIONS["ray_end"]))
