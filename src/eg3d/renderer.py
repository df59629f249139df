"""Tri-plane volume rendering: camera rays, plane lookups, the OSG decoder, importance sampling, marching.

Conventions (the official EG3D ones; the camera side is described in :mod:`eg3d.camera`):

- **Rays.** A camera is a 4x4 OpenCV cam2world matrix (columns right, down, forward, position) and 3x3
  intrinsics normalized by the image size. Pixel (row i, col j) of an R x R render sits at
  ``u = (j+0.5)/R, v = (i+0.5)/R``; its ray index is ``i*R + j``. Directions are unit vectors in world space,
  origins the camera centre.
- **Tri-planes.** ``planes`` is (B, 3, C, H, W). A point is scaled by ``2/box_warp`` and read at (x, y) in
  plane 0, (x, z) in plane 1 and (z, x) in plane 2 (EG3D's axis quirk: there is no true yz plane), the first
  coordinate indexing width. Lookups are bilinear with half-pixel centres (``align_corners=False``) and zero
  outside [-1, 1].
- **Decoder.** The three plane features are averaged, then FC(C->64), softplus, FC(64->1+32). ``sigma`` is the
  raw first output; ``rgb`` the other 32, squashed to [-0.001, 1.001] by ``sigmoid(x)*1.002 - 0.001``.
- **Sampling.** D coarse depths per ray in [ray_start, ray_end], each jittered uniformly inside its bin; then
  D_imp importance depths drawn by inverse-CDF sampling from the smoothed coarse weights; both sets are merged
  and sorted, and all D + D_imp samples are marched. ``deterministic=True`` removes every random draw: coarse
  depths are ``linspace(ray_start, ray_end, D)`` and the inverse CDF is evaluated at
  ``u = linspace(0, 1, D_imp)`` for every ray (the rule the reference fixtures were made with).
  ``ray_start = ray_end = 'auto'`` takes per-ray limits from the box of side ``box_warp``.
- **Marching.** Each interval between consecutive samples takes the mean colour and density of its two ends,
  ``sigma = softplus(density - 1)``, ``alpha = 1 - exp(-sigma*dt)`` and weight
  ``alpha * prod_{k<i}(1 - alpha_k + 1e-10)``. The composite is ``sum(w*colour)*2 - 1`` (no background unless
  ``white_back``); depth is ``sum(w*t)/sum(w)`` (not opacity-weighted), NaN -> +inf, clamped to the min/max of
  all depths in the batch.
"""
from __future__ import annotations

from numbers import Integral

import torch
import torch.nn.functional as F
from torch import nn

from eg3d.layers import FullyConnectedLayer

# Which coordinates of a (scaled) point each plane reads, as (width index, height index).
PLANE_AXES = ((0, 1), (0, 2), (2, 0))

RGB_PAD = 0.001  # the decoder's features span [-RGB_PAD, 1 + RGB_PAD] (MipNeRF's widened sigmoid)
DENSITY_SHIFT = 1.0  # sigma = softplus(density - DENSITY_SHIFT)
TRANSMITTANCE_EPS = 1e-10
EMPTY_RAY = 1e-10  # weight sum below which a ray counts as empty (its depth is the far end)
PDF_EPS = 1e-5
PDF_SMOOTHING = 0.01

REQUIRED_OPTIONS = ("ray_start", "ray_end", "depth_resolution", "depth_resolution_importance", "box_warp")


class RaySampler(nn.Module):
    """One ray per pixel centre of an R x R image, for a batch of cameras."""

    def forward(self, cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int):
        """
        Args:
            cam2world: (B, 4, 4) OpenCV camera-to-world matrices.
            intrinsics: (B, 3, 3) intrinsics normalized by image size (skew honoured).
            resolution: R, the render resolution.
        Returns:
            ray_origins (B, R*R, 3) and unit ray_directions (B, R*R, 3); ray i*R + j is row i, column j.
        """
        if cam2world.ndim != 3 or cam2world.shape[1:] != (4, 4):
            raise ValueError(f"cam2world must be (B, 4, 4), got {tuple(cam2world.shape)}")
        if intrinsics.shape != (cam2world.shape[0], 3, 3):
            raise ValueError(f"intrinsics must be (B, 3, 3) with B={cam2world.shape[0]}, "
                             f"got {tuple(intrinsics.shape)}")
        if isinstance(resolution, bool) or not isinstance(resolution, Integral) or resolution < 1:
            raise ValueError(f"resolution must be a positive int, got {resolution!r}")
        device, dtype = cam2world.device, cam2world.dtype

        centres = torch.arange(resolution, dtype=dtype, device=device) * (1.0 / resolution)
        centres = centres + 0.5 / resolution  # (R,) pixel centres in [0, 1]
        v = centres[:, None].expand(resolution, resolution).reshape(1, -1)  # (1, R*R) row coordinate
        u = centres[None, :].expand(resolution, resolution).reshape(1, -1)  # (1, R*R) column coordinate

        fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]  # (B, 1)
        cx, cy = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None]
        skew = intrinsics[:, 0, 1, None]
        x = (u - cx + cy * skew / fy - skew * v / fy) / fx  # (B, R*R), camera frame at depth 1
        y = (v - cy) / fy
        ones = torch.ones_like(x)
        points_cam = torch.stack([x, y, ones, ones], dim=-1)  # (B, R*R, 4) homogeneous
        points_world = torch.bmm(cam2world, points_cam.transpose(1, 2)).transpose(1, 2)[..., :3]

        camera_centre = cam2world[:, :3, 3]  # (B, 3)
        ray_directions = F.normalize(points_world - camera_centre[:, None, :], dim=2)
        ray_origins = camera_centre[:, None, :].expand_as(ray_directions).contiguous()
        return ray_origins, ray_directions


def sample_from_planes(planes: torch.Tensor, coordinates: torch.Tensor, *, box_warp: float) -> torch.Tensor:
    """Bilinear lookup of tri-plane features.

    Args:
        planes: (B, 3, C, H, W) plane features.
        coordinates: (B, M, 3) world points; the box [-box_warp/2, box_warp/2]^3 maps onto the planes.
        box_warp: side length of the box the planes cover.
    Returns:
        (B, 3, M, C) features, zero for points whose plane coordinates fall outside [-1, 1].
    """
    if planes.ndim != 5 or planes.shape[1] != len(PLANE_AXES):
        raise ValueError(f"planes must be (B, 3, C, H, W), got {tuple(planes.shape)}")
    if coordinates.ndim != 3 or coordinates.shape[-1] != 3 or coordinates.shape[0] != planes.shape[0]:
        raise ValueError(f"coordinates must be (B, M, 3) with B={planes.shape[0]}, "
                         f"got {tuple(coordinates.shape)}")
    batch, n_planes, channels, height, width = planes.shape
    n_points = coordinates.shape[1]

    scaled = (2 / box_warp) * coordinates
    grid = torch.stack([scaled[..., list(axes)] for axes in PLANE_AXES], dim=1)  # (B, 3, M, 2)
    grid = grid.reshape(batch * n_planes, 1, n_points, 2).to(planes.dtype)
    features = F.grid_sample(planes.reshape(batch * n_planes, channels, height, width), grid, mode="bilinear",
                             padding_mode="zeros", align_corners=False)  # (B*3, C, 1, M)
    return features.reshape(batch, n_planes, channels, n_points).transpose(2, 3)  # (B, 3, M, C)


class OSGDecoder(nn.Module):
    """EG3D's small MLP from averaged plane features to (density, feature colour)."""

    def __init__(self, n_features: int = 32, *, hidden_dim: int = 64, decoder_lr_mul: float = 1.0,
                 decoder_output_dim: int = 32):
        """
        Args:
            n_features: channels per plane (C).
            hidden_dim: width of the hidden layer.
            decoder_lr_mul: equalized-lr multiplier of both layers (``rendering_kwargs['decoder_lr_mul']``).
            decoder_output_dim: number of feature-colour channels (the first 3 are the raw RGB image).
        """
        super().__init__()
        self.hidden_dim = hidden_dim
        self.output_dim = decoder_output_dim
        self.net = nn.Sequential(
            FullyConnectedLayer(n_features, hidden_dim, lr_multiplier=decoder_lr_mul),
            nn.Softplus(),
            FullyConnectedLayer(hidden_dim, 1 + decoder_output_dim, lr_multiplier=decoder_lr_mul),
        )

    def forward(self, sampled_features: torch.Tensor,
                ray_directions: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            sampled_features: (B, 3, M, C) plane features of M points.
            ray_directions: (B, M, 3) view directions (unused: EG3D's decoder is view independent).
        Returns:
            {'sigma': (B, M, 1) raw density, 'rgb': (B, M, decoder_output_dim) in [-0.001, 1.001]}.
        """
        x = self.net(sampled_features.mean(1))  # (B, M, 1 + out)
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * RGB_PAD) - RGB_PAD
        return {"sigma": x[..., :1], "rgb": rgb}


def stratified_depths(ray_origins: torch.Tensor, ray_start, ray_end, n_samples: int, *,
                      disparity_space: bool = False, deterministic: bool = False) -> torch.Tensor:
    """D depths per ray from ray_start to ray_end: the starts of D-1 equal bins plus ray_end, each moved
    forward by a uniform jitter of up to one bin unless ``deterministic``. With ``disparity_space`` the
    spacing is uniform in inverse depth.

    Args:
        ray_origins: (B, N, 3), for the shape and device.
        ray_start, ray_end: numbers, or (B, N, 1) per-ray limits.
    Returns:
        (B, N, D, 1) depths.
    """
    batch, n_rays, _ = ray_origins.shape
    device = ray_origins.device
    per_ray = torch.is_tensor(ray_start)
    if per_ray:  # (B, N, 1) -> (B, N, 1, 1)
        ray_start, ray_end = ray_start.unsqueeze(-1), ray_end.unsqueeze(-1)
    if disparity_space:
        steps = torch.linspace(0, 1, n_samples, device=device).reshape(1, 1, n_samples, 1)
        steps = steps.repeat(batch, n_rays, 1, 1)
        if not deterministic:
            steps = steps + torch.rand_like(steps) * (1 / (n_samples - 1))
        return 1.0 / (1.0 / ray_start * (1.0 - steps) + 1.0 / ray_end * steps)
    if per_ray:
        steps = torch.arange(n_samples, dtype=torch.float32, device=device) / (n_samples - 1)
        depths = ray_start + steps.reshape(1, 1, n_samples, 1) * (ray_end - ray_start)
        jitter = 0
        if not deterministic:  # drawn sample-major like EG3D, so seeded renders equal its own
            jitter = torch.rand(n_samples, batch, n_rays, 1, device=device).permute(1, 2, 0, 3)
    else:
        depths = torch.linspace(ray_start, ray_end, n_samples, device=device)
        depths = depths.reshape(1, 1, n_samples, 1).repeat(batch, n_rays, 1, 1)
        jitter = torch.rand_like(depths) if not deterministic else 0
    return depths + jitter * ((ray_end - ray_start) / (n_samples - 1))


def ray_box_limits(ray_origins: torch.Tensor, ray_directions: torch.Tensor, box_side: float):
    """Entry and exit distances of rays through the cube [-box_side/2, box_side/2]^3 (slab method).

    Args:
        ray_origins, ray_directions: (B, N, 3).
    Returns:
        t_min, t_max (B, N, 1); rays whose line misses the cube get t_min = -1, t_max = -2.
    """
    half = box_side / 2
    inverse = 1 / ray_directions.detach()
    origins = ray_origins.detach()
    t_low, t_high = (-half - origins) * inverse, (half - origins) * inverse  # (B, N, 3) plane crossings
    t_min = torch.minimum(t_low, t_high).amax(-1, keepdim=True)
    t_max = torch.maximum(t_low, t_high).amin(-1, keepdim=True)
    hit = t_min <= t_max
    t_min = torch.where(hit, t_min, torch.full_like(t_min, -1.0))
    t_max = torch.where(hit, t_max, torch.full_like(t_max, -2.0))
    return t_min, t_max


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n_samples: int, *, deterministic: bool = False,
               eps: float = PDF_EPS) -> torch.Tensor:
    """Inverse-CDF sampling of a piecewise-constant density.

    Args:
        bins: (N, K+1) bin edges, increasing along each row.
        weights: (N, K) non-negative bin weights (``eps`` is added to each).
        n_samples: samples per row.
        deterministic: evaluate at ``u = linspace(0, 1, n_samples)`` instead of ``u ~ U[0, 1)``.
        eps: weight offset, and the CDF step below which the denominator is taken as 1.
    Returns:
        (N, n_samples) samples. The search is right-sided: u equal to a CDF value falls in the bin starting
        there.
    """
    n_rows, n_bins = weights.shape
    weights = weights + eps
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # (N, K+1), 0 .. 1
    if deterministic:
        u = torch.linspace(0, 1, n_samples, device=bins.device, dtype=cdf.dtype).expand(n_rows, n_samples)
    else:
        u = torch.rand(n_rows, n_samples, device=bins.device, dtype=cdf.dtype)
    u = u.contiguous()

    index = torch.searchsorted(cdf, u, right=True)
    lower = (index - 1).clamp(min=0)
    upper = index.clamp(max=n_bins)
    cdf_lower, cdf_upper = cdf.gather(1, lower), cdf.gather(1, upper)
    bin_lower, bin_upper = bins.gather(1, lower), bins.gather(1, upper)
    step = cdf_upper - cdf_lower
    # u can (almost) never land in a bin this thin; any finite value keeps the result in range.
    step = torch.where(step < eps, torch.ones_like(step), step)
    return bin_lower + (u - cdf_lower) / step * (bin_upper - bin_lower)


@torch.no_grad()
def importance_depths(coarse_depths: torch.Tensor, coarse_weights: torch.Tensor, n_samples: int, *,
                      deterministic: bool = False) -> torch.Tensor:
    """EG3D's fine depths from a coarse pass.

    The D-1 interval weights are smoothed (max-pool 2/stride 1/pad 1, then avg-pool 2/stride 1, then +0.01);
    the first and last smoothed values are dropped, and the D-3 that remain are the pdf over the first D-2
    coarse-depth midpoints (the last midpoint is not used).

    Args:
        coarse_depths: (B, N, D, 1); coarse_weights: (B, N, D-1, 1) marcher weights of the coarse pass.
    Returns:
        (B, N, n_samples, 1) depths, detached.
    """
    batch, n_rays, n_coarse, _ = coarse_depths.shape
    if n_coarse < 4:
        raise ValueError(f"importance sampling needs depth_resolution >= 4, got {n_coarse}")
    depths = coarse_depths.reshape(batch * n_rays, n_coarse)
    weights = coarse_weights.reshape(batch * n_rays, 1, n_coarse - 1).float()
    weights = F.max_pool1d(weights, 2, 1, padding=1)  # (BN, 1, D)
    weights = F.avg_pool1d(weights, 2, 1).squeeze(1) + PDF_SMOOTHING  # (BN, D-1)
    midpoints = 0.5 * (depths[:, :-1] + depths[:, 1:])  # (BN, D-1)
    fine = sample_pdf(midpoints, weights[:, 1:-1], n_samples, deterministic=deterministic)
    return fine.reshape(batch, n_rays, n_samples, 1)


def march(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor, *,
          clamp_mode: str = "softplus", white_back: bool = False):
    """Alpha-composite samples along rays (EG3D's MipRayMarcher2, interval midpoints).

    Args:
        colors: (B, N, S, C); densities: (B, N, S, 1) raw; depths: (B, N, S, 1), sorted along S.
    Returns:
        composite (B, N, C) in the x2-1 range, depth (B, N, 1), interval weights (B, N, S-1, 1).
    """
    if clamp_mode != "softplus":
        raise ValueError(f"clamp_mode must be 'softplus' (the only mode EG3D's marcher supports), "
                         f"got {clamp_mode!r}")
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = (densities[:, :, :-1] + densities[:, :, 1:]) / 2
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2

    sigma = F.softplus(densities_mid - DENSITY_SHIFT)
    alpha = 1 - torch.exp(-sigma * deltas)
    survive = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + TRANSMITTANCE_EPS], -2)
    weights = alpha * torch.cumprod(survive, -2)[:, :, :-1]  # (B, N, S-1, 1)

    composite = torch.sum(weights * colors_mid, -2)
    weights_sum = weights.sum(2)
    # EG3D divides and maps the 0/0 of empty rays to the far end. The same values, but an empty ray's 0/0 (or a
    # vanishing weight) would make the backward pass NaN even where the depth gets no gradient, so near-empty rays
    # (weight sum <= EMPTY_RAY) take the far end directly.
    filled = weights_sum > EMPTY_RAY
    depth = torch.sum(weights * depths_mid, -2) / weights_sum.clamp_min(EMPTY_RAY)
    depth = torch.where(filled, depth, torch.full_like(depth, float("inf"))).clamp(torch.min(depths), torch.max(depths))
    if white_back:
        composite = composite + 1 - weights_sum
    return composite * 2 - 1, depth, weights


def merge_samples(depths_a, colors_a, densities_a, depths_b, colors_b, densities_b):
    """Concatenate two sample sets along the sample axis and sort them by depth. All (B, N, S, *)."""
    depths = torch.cat([depths_a, depths_b], dim=-2)
    colors = torch.cat([colors_a, colors_b], dim=-2)
    densities = torch.cat([densities_a, densities_b], dim=-2)
    depths, order = torch.sort(depths, dim=-2, stable=True)  # stable: ties keep coarse before fine
    colors = torch.gather(colors, -2, order.expand(-1, -1, -1, colors.shape[-1]))
    densities = torch.gather(densities, -2, order)
    return depths, colors, densities


def _check_options(options: dict) -> None:
    missing = [key for key in REQUIRED_OPTIONS if key not in options]
    if missing:
        raise ValueError(f"rendering options lack {missing}; pass the generator's rendering_kwargs")
    auto = [options["ray_start"] == "auto", options["ray_end"] == "auto"]
    if any(auto) and not all(auto):
        raise ValueError("ray_start and ray_end must both be 'auto' (limits from the box) or both numbers")
    if not any(auto) and not options["ray_start"] < options["ray_end"]:
        raise ValueError(f"need ray_start < ray_end, got {options['ray_start']} and {options['ray_end']}")
    if options["depth_resolution"] < 2:
        raise ValueError(f"depth_resolution must be >= 2, got {options['depth_resolution']}")
    if options["depth_resolution_importance"] < 0:
        raise ValueError(f"depth_resolution_importance must be >= 0, "
                         f"got {options['depth_resolution_importance']}")
    if options.get("clamp_mode", "softplus") != "softplus":
        raise ValueError(f"clamp_mode must be 'softplus', got {options['clamp_mode']!r}")


class ImportanceRenderer(nn.Module):
    """Coarse + importance volume rendering of a tri-plane field (no parameters, no buffers)."""

    def forward(self, planes: torch.Tensor, decoder: nn.Module, ray_origins: torch.Tensor,
                ray_directions: torch.Tensor, rendering_options: dict, *, deterministic: bool = False):
        """
        Args:
            planes: (B, 3, C, H, W) tri-plane features.
            decoder: maps (B, 3, M, C) features and (B, M, 3) directions to {'sigma', 'rgb'}.
            ray_origins, ray_directions: (B, N, 3).
            rendering_options: the generator's rendering_kwargs: ray_start, ray_end (numbers, or both 'auto'),
                depth_resolution, depth_resolution_importance, box_warp; optional disparity_space_sampling,
                clamp_mode, white_back, density_noise.
            deterministic: no random draws (see the module docstring); the default samples like EG3D.
        Returns:
            features (B, N, C') composited and mapped x2-1, depth (B, N, 1), weights_sum (B, N, 1).
        """
        _check_options(rendering_options)
        ray_start, ray_end = rendering_options["ray_start"], rendering_options["ray_end"]
        if ray_start == "auto":
            ray_start, ray_end = self._box_limits(ray_origins, ray_directions, rendering_options["box_warp"])
        coarse_depths = stratified_depths(
            ray_origins, ray_start, ray_end, rendering_options["depth_resolution"],
            disparity_space=rendering_options.get("disparity_space_sampling", False),
            deterministic=deterministic)
        coarse_colors, coarse_densities = self._query(planes, decoder, ray_origins, ray_directions,
                                                      coarse_depths, rendering_options)
        march_options = {"clamp_mode": rendering_options.get("clamp_mode", "softplus"),
                         "white_back": rendering_options.get("white_back", False)}

        n_importance = rendering_options["depth_resolution_importance"]
        if n_importance > 0:
            _, _, coarse_weights = march(coarse_colors, coarse_densities, coarse_depths, **march_options)
            fine_depths = importance_depths(coarse_depths, coarse_weights, n_importance,
                                            deterministic=deterministic)
            fine_colors, fine_densities = self._query(planes, decoder, ray_origins, ray_directions,
                                                      fine_depths, rendering_options)
            depths, colors, densities = merge_samples(coarse_depths, coarse_colors, coarse_densities,
                                                      fine_depths, fine_colors, fine_densities)
        else:
            depths, colors, densities = coarse_depths, coarse_colors, coarse_densities

        features, depth, weights = march(colors, densities, depths, **march_options)
        return features, depth, weights.sum(2)

    @staticmethod
    def _box_limits(ray_origins, ray_directions, box_side):
        """Per-ray limits from the box. Rays that miss it get [min entry, max entry] of the rays that hit
        (EG3D's choice; such rays never enter the box, so they only see the decoder's output for zero
        features)."""
        ray_start, ray_end = ray_box_limits(ray_origins, ray_directions, box_side)
        hit = ray_end > ray_start
        if hit.any():
            first_entry, last_entry = ray_start[hit].min(), ray_start[hit].max()
            ray_start = torch.where(hit, ray_start, first_entry)
            ray_end = torch.where(hit, ray_end, last_entry)
        return ray_start, ray_end

    def _query(self, planes, decoder, ray_origins, ray_directions, depths, options):
        """Decode the points ``origin + depth*direction``: colours (B, N, S, C'), densities (B, N, S, 1)."""
        batch, n_rays, n_samples, _ = depths.shape
        coordinates = ray_origins.unsqueeze(-2) + depths * ray_directions.unsqueeze(-2)  # (B, N, S, 3)
        coordinates = coordinates.reshape(batch, -1, 3)
        directions = ray_directions.unsqueeze(-2).expand(-1, -1, n_samples, -1).reshape(batch, -1, 3)
        out = self.run_model(planes, decoder, coordinates, directions, options)
        colors = out["rgb"].reshape(batch, n_rays, n_samples, out["rgb"].shape[-1])
        densities = out["sigma"].reshape(batch, n_rays, n_samples, 1)
        return colors, densities

    def run_model(self, planes: torch.Tensor, decoder: nn.Module, coordinates: torch.Tensor,
                  directions: torch.Tensor, rendering_options: dict) -> dict[str, torch.Tensor]:
        """Decode the field at (B, M, 3) points: {'sigma': (B, M, 1) raw density, 'rgb': (B, M, C')}.

        ``rendering_options['density_noise'] > 0`` adds Gaussian noise to sigma (an EG3D training option).
        """
        features = sample_from_planes(planes, coordinates, box_warp=rendering_options["box_warp"])
        out = decoder(features, directions)
        noise_std = rendering_options.get("density_noise", 0)
        if noise_std > 0:
            out = {**out, "sigma": out["sigma"] + torch.randn_like(out["sigma"]) * noise_std}
        return out
