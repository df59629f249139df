"""Signed-distance primitives and blends, on separate coordinate tensors.

Every function takes the point as three tensors ``x, y, z`` of one shape (any shape: (B, M) for field queries,
(tiles, TILE) for rays in flight) and parameters that broadcast against it (numbers, or tensors such as (B, 1)).
Distances are in the caller's length unit; negative inside. Working on separate coordinates instead of (..., 3)
tensors keeps every operation a plain elementwise kernel, which is what makes sphere tracing millions of rays
affordable on a CPU.

Exactness: :func:`sphere`, :func:`capsule`, :func:`rounded_rect` and :func:`extrude` are exact distances;
:func:`ellipsoid` and :func:`ellipse` are Quilez's first-order bounds, exact on the surface and slight
underestimates off it. Blends and the max-based intersections keep a Lipschitz constant of about 1, so sphere
tracing can step by the value.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def length3(x: Tensor, y: Tensor, z: Tensor) -> Tensor:
    return torch.sqrt(torch.addcmul(torch.addcmul(x * x, y, y), z, z))


def length2(x: Tensor, y: Tensor) -> Tensor:
    return torch.sqrt(torch.addcmul(x * x, y, y))


def sphere(x: Tensor, y: Tensor, z: Tensor, radius) -> Tensor:
    """Sphere of ``radius`` centred at the origin."""
    return length3(x, y, z) - radius


def ellipsoid(x: Tensor, y: Tensor, z: Tensor, rx, ry, rz) -> Tensor:
    """Axis-aligned ellipsoid with semi-axes (rx, ry, rz) centred at the origin (bound, exact on the surface)."""
    u, v, w = x / rx, y / ry, z / rz
    k0 = length3(u, v, w)
    k1 = length3(u / rx, v / ry, w / rz).clamp_min(1e-6)
    return k0 * (k0 - 1) / k1


def ellipse(x: Tensor, y: Tensor, rx, ry) -> Tensor:
    """2-D ellipse with semi-axes (rx, ry) in the (x, y) plane (bound, exact on the curve); as a 3-D distance it is
    an infinite elliptic cylinder along the third axis."""
    u, v = x / rx, y / ry
    k0 = length2(u, v)
    k1 = length2(u / rx, v / ry).clamp_min(1e-6)
    return k0 * (k0 - 1) / k1


def capsule(x: Tensor, y: Tensor, z: Tensor, a: tuple, b: tuple, ra, rb=None) -> Tensor:
    """Segment from point ``a`` to point ``b`` (3-tuples of numbers or broadcastable tensors), thickened by a
    radius that goes linearly from ``ra`` at ``a`` to ``rb`` at ``b`` (``rb=None``: constant ``ra``).

    With unequal radii this is the linearly interpolated capsule, a bound of the exact round cone that is close to
    it while the radii differ by much less than the length.
    """
    px, py, pz = x - a[0], y - a[1], z - a[2]
    bx, by, bz = b[0] - a[0], b[1] - a[1], b[2] - a[2]
    h = ((px * bx + py * by + pz * bz) / (bx * bx + by * by + bz * bz)).clamp(0, 1)
    radius = ra if rb is None else ra + (rb - ra) * h
    return length3(px - bx * h, py - by * h, pz - bz * h) - radius


def rounded_rect(x: Tensor, y: Tensor, half_x, half_y, radius) -> Tensor:
    """2-D distance in the (x, y) plane to a rectangle of half sizes (half_x, half_y) with corners of ``radius``."""
    qx = x.abs() - half_x + radius
    qy = y.abs() - half_y + radius
    return length2(qx.clamp_min(0), qy.clamp_min(0)) + torch.maximum(qx, qy).clamp_max(0) - radius


def extrude(d2: Tensor, z: Tensor, half_depth) -> Tensor:
    """3-D distance of a 2-D shape (distance ``d2`` in its plane) extruded to ``|z| <= half_depth``."""
    wz = z.abs() - half_depth
    return length2(d2.clamp_min(0), wz.clamp_min(0)) + torch.maximum(d2, wz).clamp_max(0)


def smin(a: Tensor, b: Tensor, k) -> Tensor:
    """Polynomial smooth union of two distances; ``k`` (> 0) is the width of the blend, in their unit."""
    d = b - a
    h = (d / (2 * k) + 0.5).clamp(0, 1)
    return b - h * (d + k * (1 - h))


def smax(a: Tensor, b: Tensor, k) -> Tensor:
    """Smooth intersection (the mirror of :func:`smin`); ``smax(a, -b, k)`` carves ``b`` out of ``a``."""
    return -smin(-a, -b, k)


def soft_inside(d: Tensor, width) -> Tensor:
    """Weight in [0, 1] that is 1 well inside a region of distance ``d`` and 0 well outside, over ``width``."""
    return torch.sigmoid(-d / width)

