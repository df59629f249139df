"""Images of heads: sphere tracing the SDF along EG3D's exact camera rays.

For each pixel the ray of :class:`eg3d.renderer.RaySampler` (row-major, OpenCV axes: the pixels line up with what a
TriPlaneGenerator renders from the same 25-d label) is clipped to the box ``HEAD_BOX`` that holds every head and to
EG3D's depth range [RAY_START, RAY_END] = [2.25, 3.3]. Rays that miss the box are background at once. The others
are traced in two passes (:func:`trace`), finished rays leaving the batch after every step:

1. **Cones** (when R is a multiple of 32, R >= 64): one cone per block of (R/32)^2 pixels marches its axis only as
   far as keeps the whole cone, widened by the silhouette halo, clear of the surface. Blocks whose cone leaves the
   box untouched are background; the others' rays start where their cone stopped.
2. **Rays**: sphere tracing with signed steps (an overshoot steps back), ``RELAX`` x SDF far from the surface and
   secant steps near it, until ``|sdf| < HIT_EPS``, the ray leaves the box, or ``max_steps``.

Rays are evaluated in blocks of ``TILE`` rays of one head, so per-head parameters broadcast per block.

- **Colour** of a hit: :func:`faceworld.heads.surface` at the hit point, the same shaded colour ``field`` gives.
- **Silhouette**: a ray that misses keeps its closest approach ``d_min`` (at depth ``t_min``); its coverage is
  the opacity that the Laplace density of :func:`faceworld.heads.field` would give along a ray passing a surface
  of curvature radius ``SILHOUETTE_RADIUS`` at that distance, ``1 - exp(-tau)`` with
  ``tau = (0.5 / beta) * exp(-d_min / beta) * sqrt(2 pi SILHOUETTE_RADIUS beta)``, and its colour the surface
  colour there. This anti-aliases the outline and matches a volume rendering of the field to a fraction of a pixel.
- **Outputs**: ``image`` = coverage x colour + (1 - coverage) x ``BACKGROUND`` (linear RGB (0.62, 0.72, 0.82), a
  light blue-grey), mapped to [-1, 1]; ``mask`` = coverage in [0, 1]; ``depth`` = distance along the (unit) ray of
  the hit or closest approach, like EG3D's depth, and ``RAY_END`` = 3.3 where the coverage is 0.
"""
from __future__ import annotations

import math
from numbers import Integral

import torch

from eg3d.camera import split_labels
from eg3d.renderer import RaySampler
from faceworld.heads import BETA, head_sdf, surface
from faceworld.params import HeadParams

RAY_START, RAY_END = 2.25, 3.3
HEAD_BOX = ((-0.23, 0.23), (-0.47, 0.34), (-0.32, 0.29))  # (min, max) per axis: every head plus its halo
BACKGROUND = (0.62, 0.72, 0.82)
RELAX = 0.9
SECANT_GAIN, SECANT_RANGE = 3.0, 0.02
TILE = 128  # rays per block of one head (see _Tiles)
HIT_EPS = 5e-4
SILHOUETTE_RADIUS = 0.22  # typical curvature radius of the outline (hair, cheeks), fitted to volume renders
MIN_COVERAGE = 0.01  # below this a ray is background


def _box_interval(origins: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit depths (N,) of rays (N, 3) through HEAD_BOX, clipped to [RAY_START, RAY_END]."""
    low = torch.tensor([b[0] for b in HEAD_BOX], dtype=origins.dtype, device=origins.device)
    high = torch.tensor([b[1] for b in HEAD_BOX], dtype=origins.dtype, device=origins.device)
    inverse = 1 / torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0, t1 = (low - origins) * inverse, (high - origins) * inverse
    near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(RAY_START)
    far = torch.maximum(t0, t1).amin(dim=-1).clamp_max(RAY_END)
    return near, far


def coverage(d_min: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """Opacity of a ray that passes the surface at distance ``d_min`` (see the module docstring)."""
    return 1 - torch.exp(-_tau0(beta) * torch.exp(-d_min.clamp_min(0) / beta))


def _tau0(beta: float) -> float:
    return (0.5 / beta) * math.sqrt(2 * math.pi * SILHOUETTE_RADIUS * beta)


def halo(beta: float = BETA) -> float:
    """Distance from the surface beyond which a passing ray's coverage is below MIN_COVERAGE."""
    return beta * math.log(_tau0(beta) / -math.log1p(-MIN_COVERAGE))


class _Tiles:
    """Rays grouped by head, laid out as (tiles, TILE) blocks that each hold rays of one head (the last block of a
    head padded), so the SDF broadcasts per-tile parameters (tiles, 1) instead of reading one per ray: parameter
    arithmetic then costs nothing per point.

    Args:
        heads: (N,) head index of each ray, non-decreasing (rays grouped by head).
        n_heads: number of heads.
    """

    def __init__(self, heads: torch.Tensor, n_heads: int):
        n = heads.shape[0]
        counts = torch.bincount(heads, minlength=n_heads)
        first = torch.cumsum(counts, 0) - counts
        per_head = (counts + TILE - 1) // TILE
        tile_start = torch.cumsum(per_head, 0) - per_head
        self.position = tile_start[heads] * TILE + torch.arange(n, device=heads.device) - first[heads]  # (N,)
        self.count = int(per_head.sum())
        self.head = torch.repeat_interleave(torch.arange(n_heads, device=heads.device), per_head,
                                            output_size=self.count)  # (tiles,) head of each tile

    def spread(self, values: torch.Tensor, fill: float) -> torch.Tensor:
        """(N,) ray values -> (tiles, TILE), padding with ``fill``."""
        out = torch.full((self.count * TILE,), fill, dtype=values.dtype, device=values.device)
        return out.index_put_((self.position,), values).view(self.count, TILE)

    def collect(self, tiled: torch.Tensor) -> torch.Tensor:
        """(tiles, TILE, ...) -> (N, ...), dropping the padding."""
        return tiled.reshape(self.count * TILE, *tiled.shape[2:])[self.position]


def _at_rays(fn, params: HeadParams, heads: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor):
    """``fn(params, x, y, z)`` (:func:`head_sdf` or :func:`surface`) at points (N,) of rays grouped by head,
    evaluated tile by tile (:class:`_Tiles`); returns fn's outputs per ray."""
    tiles = _Tiles(heads, len(params))
    out = fn(params.index(tiles.head).columns(1), tiles.spread(x, 0.0), tiles.spread(y, 0.0),
             tiles.spread(z, 1.0))  # padding sits at (0, 0, 1), outside every head
    return tiles.collect(out) if torch.is_tensor(out) else tuple(tiles.collect(o) for o in out)


def trace(params: HeadParams, heads: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor,
          near: torch.Tensor, far: torch.Tensor, *, cone: torch.Tensor | float = 0.0, margin: float = 0.0,
          max_steps: int = 24):
    """Sphere trace rays (N, 3) from depth ``near`` to ``far`` (N,); ray i shows head ``heads[i]`` of ``params``,
    and the rays are grouped by head (``heads`` non-decreasing).

    Surface mode (``cone = margin = 0``): march until ``|sdf| < HIT_EPS``. Cone mode: march the axis of a cone
    of half-angle ``cone`` (radians, (N,) or a number) widened by ``margin``, stepping only as far as keeps the
    whole cone clear of the surface, and stop where it can advance no further: every ray inside the cone is then
    free of the surface (and of ``margin`` around it) up to the returned depth.

    Returns ``(stopped (N,) bool, t (N,), d_min (N,))``: whether the ray converged (surface mode: hit; cone
    mode: the cone touched something), the depth of the stop (for a surface-mode miss: of the closest approach),
    and the smallest SDF seen (0 for hits, inf for rays that were never marched). Finished rays leave the batch
    after every step.
    """
    n = origins.shape[0]
    stopped = torch.zeros(n, dtype=torch.bool, device=origins.device)
    depth = near.clone()
    d_min = torch.full_like(near, math.inf)
    cone_mode = not (isinstance(cone, float) and cone == 0.0 and margin == 0.0)
    cone = torch.as_tensor(cone, dtype=near.dtype, device=near.device).expand(n)

    index = torch.nonzero(near < far).squeeze(1)
    o, d, angle, h = origins[index], directions[index], cone[index], heads[index]
    t, t_far = near[index], far[index]
    best, t_best = torch.full_like(t, math.inf), t.clone()
    s_prev, t_prev = torch.full_like(t, math.inf), t.clone()
    for step in range(max_steps):
        if index.numel() == 0:
            break
        s = _at_rays(head_sdf, params, h, o[:, 0] + t * d[:, 0], o[:, 1] + t * d[:, 1], o[:, 2] + t * d[:, 2])
        closer = s < best
        best = torch.where(closer, s, best)
        t_best = torch.where(closer, t, t_best)
        if cone_mode:
            advance = RELAX * s - (angle * t + margin)
            converged = advance < HIT_EPS
        else:
            # Secant acceleration: near the surface the SDF falls along the ray at a rate g = cos(incidence);
            # stepping s / g (g estimated from the last two samples, at most SECANT_GAIN-fold) converges in a few
            # steps at grazing angles too, where plain sphere tracing creeps.
            slope = (s_prev - s) / (t - t_prev).clamp_min(1e-9)
            secant = (s < SECANT_RANGE) & (slope > 0)
            advance = torch.where(secant, s / slope.clamp(1 / SECANT_GAIN, 1), RELAX * s)
            converged = s.abs() < HIT_EPS
            s_prev, t_prev = s, t
        t = torch.where(converged, t, t + advance)
        last = step == max_steps - 1
        done = converged | (t > t_far) | last
        finished = index[done]
        # A cone still in the box after the last step has not been shown clear beyond it.
        stopped[finished] = converged[done] | (cone_mode & last & (t[done] <= t_far[done]))
        depth[finished] = torch.where(converged[done] | cone_mode, t[done], t_best[done])
        d_min[finished] = torch.where(converged[done] & (not cone_mode), torch.zeros_like(best[done]), best[done])
        keep = torch.nonzero(~done).squeeze(1)
        index, o, d, angle, h = index[keep], o[keep], d[keep], angle[keep], h[keep]
        t, t_far, best, t_best, s_prev, t_prev = (v[keep] for v in (t, t_far, best, t_best, s_prev, t_prev))
    return stopped, depth, d_min


def render(params: HeadParams, cameras: torch.Tensor, resolution: int = 128, *, beta: float = BETA,
           chunk_rays: int | None = None, max_steps: int = 24) -> dict[str, torch.Tensor]:
    """Render B heads, head b from camera ``cameras[b]``.

    Args:
        params: B heads (on the device to render on).
        cameras: (B, 25) EG3D labels (:mod:`faceworld.cameras`).
        resolution: R, pixels per side.
        beta: the density scale of the silhouette model (keep it equal to the field's).
        chunk_rays: rays traced together (memory bound); default 2^18 on CPU, 2^22 on CUDA.
        max_steps: sphere-tracing step limit per pass.
    Returns:
        dict ``image`` (B, 3, R, R) in [-1, 1], ``mask`` (B, 1, R, R) in [0, 1], ``depth`` (B, 1, R, R).
    """
    if isinstance(resolution, bool) or not isinstance(resolution, Integral) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    batch = len(params)
    if batch == 0:
        raise ValueError("render needs at least one head")
    if cameras.shape != (batch, 25):
        raise ValueError(f"cameras must be ({batch}, 25) for {batch} heads, got {tuple(cameras.shape)}")
    device = params.scale.device
    cam2world, intrinsics = split_labels(cameras.to(device=device, dtype=torch.float32))
    if chunk_rays is None:
        chunk_rays = 2 ** 22 if device.type == "cuda" else 2 ** 18
    heads_per_chunk = max(1, chunk_rays // (resolution * resolution))
    outputs = [_render_chunk(params.index(slice(start, start + heads_per_chunk)),
                             cam2world[start:start + heads_per_chunk], intrinsics[start:start + heads_per_chunk],
                             resolution, beta=beta, max_steps=max_steps)
               for start in range(0, batch, heads_per_chunk)]
    return {key: torch.cat([out[key] for out in outputs]) for key in ("image", "mask", "depth")}


def _render_chunk(params: HeadParams, cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int, *,
                  beta: float, max_steps: int) -> dict[str, torch.Tensor]:
    heads, device = len(params), cam2world.device
    pixels = resolution * resolution
    origins, directions = RaySampler()(cam2world, intrinsics, resolution)
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
    head_of_ray = torch.arange(heads, device=device).repeat_interleave(pixels)
    near, far = _box_interval(origins, directions)
    block = _coarse_block(resolution)
    if block > 1:
        # Coarse pass: one cone per block x block pixels, marched until it nears the surface; every fine ray of
        # the block can start there, and blocks whose cone never got near are background.
        coarse = resolution // block
        origins_c, directions_c = RaySampler()(cam2world, intrinsics, coarse)
        origins_c, directions_c = origins_c.reshape(-1, 3), directions_c.reshape(-1, 3)
        head_c = torch.arange(heads, device=device).repeat_interleave(coarse * coarse)
        # The fine rays of a block lie within (block/2) * sqrt(2) pixels of its centre ray; a pixel is 1/(R f)
        # radians at the image centre and less elsewhere.
        cone = (1.05 * block / math.sqrt(2) / resolution) / intrinsics[:, 0, 0]
        near_c, far_c = _box_interval(origins_c, directions_c)
        touched, t_c, _ = trace(params, head_c, origins_c, directions_c, near_c, far_c, cone=cone[head_c],
                                margin=halo(beta), max_steps=max_steps)
        rows = torch.arange(resolution, device=device) // block
        block_of_pixel = (rows[:, None] * coarse + rows[None, :]).reshape(-1)  # (R*R,) block index
        block_of_ray = (head_of_ray * coarse * coarse + block_of_pixel.repeat(heads))
        start = t_c[block_of_ray]
        near = torch.where(touched[block_of_ray], torch.maximum(near, start), torch.full_like(near, math.inf))
    hit, t, d_min = trace(params, head_of_ray, origins, directions, near, far, max_steps=max_steps)

    cover = torch.where(hit, torch.ones_like(t), coverage(d_min, beta))
    cover = torch.where(cover < MIN_COVERAGE, torch.zeros_like(cover), cover)
    background = torch.tensor(BACKGROUND, device=device)
    rgb = background.expand(origins.shape[0], 3).clone()
    shown = torch.nonzero(cover > 0).squeeze(1)
    points = origins[shown] + t[shown, None] * directions[shown]
    _, _, colour = _at_rays(surface, params, head_of_ray[shown], points[:, 0], points[:, 1], points[:, 2])
    c = cover[shown, None]
    rgb[shown] = c * colour + (1 - c) * background
    depth = torch.where(cover > 0, t, torch.full_like(t, RAY_END))
    shape = (heads, resolution, resolution)
    return {"image": rgb.reshape(*shape, 3).permute(0, 3, 1, 2) * 2 - 1, "mask": cover.reshape(*shape)[:, None],
            "depth": depth.reshape(*shape)[:, None]}


def _coarse_block(resolution: int) -> int:
    """Side of the pixel blocks of the coarse pass: a 32 x 32 grid of cones when R is a multiple of 32 above it."""
    return resolution // 32 if resolution >= 64 and resolution % 32 == 0 else 1
