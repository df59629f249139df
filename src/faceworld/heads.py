"""The procedural head: a signed distance function, its surface colour, and the density field.

Frame and size (EG3D's FFHQ conventions, :mod:`eg3d.camera`): world y is up and the face looks along +z. Each
head is built in its own frame (the constants below, in which the skull centre is (0, 0.055, -0.015)) and scaled
by ``HeadParams.scale`` (``HEAD_SCALE`` = 1.18 +- a few %) about the origin into the world. In world units the eyes
are at y ~ 0.04, the nose tip near (0, -0.04, 0.24), just in front of the camera pivot (0, 0, 0.2), and a head
spans x in [-0.19, 0.19] (ears, hair), y in [-0.47, 0.30] (the neck is cut at the box floor, out of view) and z
in [-0.28, 0.25]; :func:`head_sdf` is cut to ``|x|, |y|, |z| <= BOX`` = 0.47, so the density is ~0 outside EG3D's
box [-0.5, 0.5]^3 (box_warp 1). Seen from the FFHQ camera (radius 2.7, focal 4.2647) a head fills about 60% of the
image width and nearly all of its height.

The SDF is a smooth-min composition of ellipsoids, capsules and carved-out regions (:mod:`faceworld.sdf`):

- **skin**: skull, lower face (jaw), chin, cheekbones, angular jaw corners (men), eye sockets carved out, nose
  (bridge, tip, wings), ears (with a hollow), neck, lips (bent by the smile curve), eyelids, a mouth cavity carved
  between the lips;
- **eyes**: eyeballs whose colour (white, iris, pupil) depends on the angle from the gaze axis (+z);
- **teeth** behind the lips, visible when the mouth opens;
- **hair**: a cap over the skull cut along a hairline, long hair hanging to the shoulders (women) with the face
  left open, and a fringe whose length is the ``bangs`` level;
- **beard**: a shell over the jaw below the cheek line with the mouth left free (``beard`` levels 2..5; levels 1..2
  also darken the skin as stubble);
- **glasses**: two rounded-rectangle rims, a bridge and temple arms (``eyeglasses`` 1..4 by thickness and shade),
  plus dark lenses at level 5.

Colour is view independent: albedo (per part, with painted details: brows, lash lines, wrinkles and folds by age,
stubble, grey strands, the dark mouth interior) times ``AMBIENT + SKY * n_y + DIFFUSE * max(0, n . LIGHT)`` with
the normal ``n`` of the SDF and one fixed light from the front and above (x = 0, so symmetric heads render
symmetric). Density is VolSDF's Laplace density ``sigma = (1/beta) * Psi_beta(-sdf)`` (``Psi_beta`` the CDF of a
zero-mean Laplace distribution of scale beta), with ``BETA`` = 0.002 by default: under half a pixel at 128^2.

The SDF and colours are plain differentiable torch code (no in-place tricks), evaluated for any point shape with
parameters that broadcast against it, so B heads are one vectorised call on the CPU or a GPU.
"""
from __future__ import annotations

import math

import torch

from faceworld.params import GREY_HAIR, HeadParams
from faceworld.sdf import (
    capsule,
    ellipse,
    ellipsoid,
    extrude,
    length2,
    length3,
    rounded_rect,
    smax,
    smin,
    soft_inside,
    sphere,
)

BETA = 0.002
BOX = 0.47  # every head lies in |x|, |y|, |z| <= BOX: its density is ~0 outside EG3D's box of half-side 0.5
LIGHT = (0.0, 0.55 / math.hypot(0.55, 1.0), 1.0 / math.hypot(0.55, 1.0))
AMBIENT, SKY, DIFFUSE = 0.32, 0.12, 0.60
NORMAL_STEP = 5e-4  # finite-difference step of the normal (world units; ~1/10 pixel at 128^2)
COLOUR_SOFTNESS = 0.0012  # width of the blend between parts' colours
PARTS = ("skin", "lips", "eyes", "teeth", "hair", "beard", "frames", "lens")
_ABSENT = 1.0  # distance added to a part a head does not have (pushes it far outside)

SKULL_CENTRE = (0.0, 0.055, -0.015)
JAW_CENTRE = (0.0, -0.03, 0.028)
CHIN_DROP, CHIN_Z = 0.128, 0.108  # chin centre below the jaw centre, and its z
EYE_FRONT = 0.149   # z of the front of the eyeballs
NOSE_BASE_Z = 0.158  # z of the face under the nose; the tip stands out of it by nose_tip
LIP_Z = 0.151       # z of the lip centres
GLASSES_Z = 0.176   # z of the spectacle rims
EYE_WHITE = (0.93, 0.92, 0.90)
TEETH = (0.93, 0.91, 0.84)
MOUTH_INSIDE = (0.22, 0.05, 0.06)
LENS = (0.035, 0.035, 0.05)


def _eyes(p: HeadParams, c):
    """Sockets carved under the brow, eyeballs, and lids (lid spheres cut by the lid-edge planes)."""
    ex, ey, ez = c["ex"], c["ey"], c["ez"]
    socket = ellipsoid(ex, ey - 0.003, c["z"] - 0.156, 0.029, 0.02, 0.018)
    upper = torch.maximum(sphere(ex, ey, ez, p.eye_r + 0.0022), p.upper_lid * p.eye_r - ey)
    lower = torch.maximum(sphere(ex, ey, ez, p.eye_r + 0.0016), ey - p.lower_lid * p.eye_r)
    return {"socket": socket, "eyes": sphere(ex, ey, ez, p.eye_r), "lids": torch.minimum(upper, lower)}


def _nose(p: HeadParams, c):
    """Bridge to tip, tip ball, wings."""
    x, y, z = c["x"], c["y"], c["z"]
    tip_y, tip_z = p.eye_y - p.nose_length, NOSE_BASE_Z + p.nose_tip
    bridge = capsule(x, y, z, (0.0, p.eye_y + 0.012, 0.146), (0.0, tip_y + 0.005, tip_z - 0.008), 0.0085, 0.0105)
    tip = sphere(x, y - tip_y, z - tip_z + 0.0095, 0.0105)
    wings = sphere(c["ax"] - p.nose_width, y - tip_y + 0.005, z - tip_z + 0.024, 0.008)
    return {"nose": smin(smin(bridge, tip, 0.012), wings, 0.01)}


def _ears(p: HeadParams, c):
    """Flat ellipsoids on the sides of the skull, hollowed on the outside."""
    ax, z = c["ax"], c["z"]
    ear_y = c["y"] - p.eye_y + 0.02
    sx = p.skull[..., 0]
    ear = ellipsoid(ax - sx - 0.004, ear_y, z + 0.012, 0.01, 0.046 * p.ear_size, 0.026 * p.ear_size)
    hollow = ellipsoid(ax - sx - 0.014, ear_y + 0.004, z + 0.01, 0.007, 0.03 * p.ear_size, 0.016 * p.ear_size)
    return {"ears": smax(ear, -hollow, 0.004)}


def _mouth(p: HeadParams, c):
    """Lips, the cavity between them, teeth, and the opening the beard leaves, in the mouth's bent frame."""
    mx, my, mz = c["jaw_x"], c["my"], c["mz"]  # the mouth moves with the jaw
    full = p.lip_fullness
    upper_lip = ellipsoid(mx, my - 0.006 * full, mz, p.mouth_width, 0.0068 * full, 0.012)
    lower_lip = ellipsoid(mx, my + 0.0072 * full + p.mouth_open, mz + 0.002, 0.88 * p.mouth_width,
                          0.0078 * full, 0.011)
    open_y = my + 0.5 * p.mouth_open
    return {"lips": torch.minimum(upper_lip, lower_lip),
            "cavity": ellipsoid(mx, open_y, mz + 0.008, 0.72 * p.mouth_width, 0.5 * p.mouth_open + 0.001, 0.02),
            "teeth": ellipsoid(mx, my + 0.0015, mz + 0.011, 0.76 * p.mouth_width, 0.009, 0.011),
            "mouth_hole": ellipsoid(mx, open_y, mz, p.mouth_width + 0.004, 0.011 + 0.6 * p.mouth_open, 0.05)}


def _drape(p: HeadParams, c):
    """Long hair: hangs behind the face to the shoulders, shorter in front."""
    x, y, z = c["x"], c["y"], c["z"]
    th, length = p.hair_thickness, p.hair_length
    drape = ellipsoid(x, y + 0.05 + 0.08 * (length - 1), z + 0.05, p.skull[..., 0] + 0.7 * th + 0.006,
                      0.21 * length, p.skull[..., 2] + 0.5 * th - 0.012)
    drape = smax(drape, -ellipse(x, z - 0.2, 0.122, 0.27), 0.015)  # the face stays open
    drape = smax(drape, 0.8 * (z - 0.1 - 0.7 * y.clamp_max(0)), 0.02)
    return {"drape": drape + _ABSENT * (1 - p.hair_long)}


def _fringe(p: HeadParams, c):
    """Bangs: a shell over the forehead ending ``fringe_drop`` below the hairline, in strands."""
    x, y, z = c["x"], c["y"], c["z"]
    th = p.hair_thickness
    bottom = p.hairline + 0.006 - p.fringe_drop + 0.012 * p.parting * x / 0.1 + 0.0025 * torch.cos(170 * x)
    shell = ellipsoid(x, y - SKULL_CENTRE[1] - 0.003, z - SKULL_CENTRE[2], p.skull[..., 0] + 0.6 * th + 0.004,
                      p.skull[..., 1] + th, p.skull[..., 2] + 0.6 * th + 0.006)
    fringe = torch.maximum(torch.maximum(shell, bottom - y), torch.maximum(0.07 - z, c["ax"] - 0.125))
    return {"fringe": fringe + _ABSENT * (p.fringe_drop <= 0).to(fringe.dtype)}


def _beard(p: HeadParams, c):
    """The jaw inflated by the beard's thickness, below the cheek line, mouth left open."""
    jaw_x, jaw_y, z = c["jaw_x"], c["jaw_y"], c["z"]
    bt = p.beard_thickness
    shell = smin(ellipsoid(jaw_x, jaw_y, z - JAW_CENTRE[2], p.jaw[..., 0] + bt, p.jaw[..., 1] + 1.4 * bt,
                           p.jaw[..., 2] + bt),
                 ellipsoid(jaw_x, jaw_y + CHIN_DROP, z - CHIN_Z, 0.028 * p.chin + bt, 0.024 + 1.6 * bt, 0.03 + bt),
                 0.03)
    beard = smax(smax(shell, c["zone"], 0.004), -c["mouth_hole"], 0.004)
    return {"beard": beard + _ABSENT * (bt <= 0).to(beard.dtype)}


def _glasses(p: HeadParams, c):
    """Rims, bridge and temple arms; dark lenses at the top level."""
    ax, y, z = c["ax"], c["y"], c["z"]
    fw = p.frame_width
    gz = z - GLASSES_Z
    rim_shape = rounded_rect(ax - p.eye_x - 0.002, y - p.eye_y + 0.002, 0.029, 0.020, 0.012)
    rims = extrude(rim_shape.abs() - fw, gz, 0.0012 + 0.5 * fw)
    bridge = capsule(ax, y, z, (0.0, p.eye_y + 0.006, 0.168), (p.eye_x - 0.027, p.eye_y + 0.006, GLASSES_Z), fw)
    arms = capsule(ax, y, z, (p.eye_x + 0.031, p.eye_y + 0.008, GLASSES_Z - 0.002),
                   (p.skull[..., 0] + 0.007, p.eye_y + 0.004, 0.01), 0.8 * fw)
    return {"frames": torch.minimum(torch.minimum(rims, bridge), arms) + _ABSENT * (fw <= 0).to(rims.dtype),
            "lens": extrude(rim_shape, gz, 0.0012) + _ABSENT * (1 - p.lens)}


def _geometry(p: HeadParams, x, y, z) -> dict[str, torch.Tensor]:
    """Distances of every part, plus intermediate coordinates the colours need; points in the head's frame
    (already divided by its scale). All tensors have the points' shape."""
    ax = x.abs()  # paired features are evaluated once, mirrored
    sx, sy, sz = p.skull[..., 0], p.skull[..., 1], p.skull[..., 2]
    male = p.masculine

    # Skull and lower face (widest at the cheekbones, tapering to the chin).
    skull = ellipsoid(x, y - SKULL_CENTRE[1], z - SKULL_CENTRE[2], sx, sy, sz)
    jaw_x = x - p.jaw_side
    jaw_y = y - JAW_CENTRE[1] + p.jaw_drop
    jaw = ellipsoid(jaw_x, jaw_y, z - JAW_CENTRE[2], p.jaw[..., 0], p.jaw[..., 1], p.jaw[..., 2])
    chin = ellipsoid(jaw_x, jaw_y + CHIN_DROP, z - CHIN_Z, 0.028 * p.chin, 0.024, 0.03)
    corners = ellipsoid(ax - 0.062, jaw_y + 0.105, z - 0.02, 0.03, 0.024, 0.05) + _ABSENT * (1 - male)
    smile_lift = p.smile.clamp_min(0)
    cheeks = ellipsoid(ax - 0.066, y + 0.006 - 0.004 * smile_lift, z - 0.1 - 0.003 * smile_lift,
                       0.04, 0.028, 0.034 * p.cheeks)
    face = smin(smin(smin(smin(skull, jaw, 0.05), chin, 0.04), corners, 0.04), cheeks, 0.04)
    neck = capsule(x, y, z, (0.0, -0.08, -0.04), (0.0, -0.42, -0.055), 0.08 + 0.01 * male)  # cut by the box
    face = smin(face, neck, 0.04)

    # Coordinates of the features: the eyes' (mirrored), the mouth's (its corners lift with the smile and wrap back
    # with the face), and the beard zone (below the cheek line, in front of the ears).
    eye_z = EYE_FRONT - p.eye_r
    reach = (jaw_x / p.mouth_width).square().clamp_max(1.4)
    c = {"x": x, "ax": ax, "y": y, "z": z, "ex": ax - p.eye_x, "ey": y - p.eye_y, "ez": z - eye_z,
         "my": y - p.mouth_y + 0.3 * p.jaw_drop - 0.014 * p.smile * reach,
         "mz": z - LIP_Z - p.lip_pout + 0.016 * reach, "jaw_x": jaw_x, "jaw_y": jaw_y,
         "zone": torch.maximum((y - 0.025 + 0.5 * z.clamp_min(0)) / 1.12, -0.025 - z)}
    g = _eyes(p, c) | _nose(p, c) | _ears(p, c) | _mouth(p, c)
    c["mouth_hole"] = g["mouth_hole"]
    g |= _beard(p, c) | _glasses(p, c) | _drape(p, c) | _fringe(p, c)

    face = smax(face, -g["socket"], 0.01)
    face = smin(face, g["lids"], 0.003)
    face = smin(face, g["nose"], 0.008)
    face = smin(face, g["ears"], 0.012)
    face = smax(face, -g["cavity"], 0.003)
    skin = smax(smin(face, g["lips"], 0.008), -g["cavity"], 0.003)

    # Hair: a cap above the hairline, long hair (women), fringe.
    th = p.hair_thickness
    cap = ellipsoid(x, y - SKULL_CENTRE[1] - 0.3 * th, z - SKULL_CENTRE[2] + 0.2 * th, sx + 0.7 * th,
                    sy + 1.1 * th, sz + th)
    hairline = (p.hairline + 0.006 * p.parting * x / 0.1 - 2.0 * x * x - 0.45 * (0.12 - z).clamp(0, 0.14)
                - 4.0 * (-0.04 - z).clamp_min(0))
    hair = smin(smax(cap, 0.45 * (hairline - y), 0.008), g["drape"], 0.02)
    hair = smin(hair, g["fringe"], 0.008)

    sdf = torch.minimum(torch.minimum(torch.minimum(skin, g["eyes"]), torch.minimum(g["teeth"], hair)),
                        torch.minimum(torch.minimum(g["beard"], g["frames"]), g["lens"]))
    # Colours go by the part a point is closest to; skin there means the face without the lips blended in.
    return {"sdf": sdf, "skin": face, "lips": g["lips"], "eyes": g["eyes"], "teeth": g["teeth"], "hair": hair,
            "beard": g["beard"], "frames": g["frames"], "lens": g["lens"], "cavity": g["cavity"], "zone": c["zone"],
            "ex": c["ex"], "ey": c["ey"], "ez": c["ez"], "tip_y": p.eye_y - p.nose_length,
            "tip_z": NOSE_BASE_Z + p.nose_tip, "my": c["my"]}


def head_sdf(params: HeadParams, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Signed distance (world units) of world points (x, y, z) to the heads; ``params`` broadcasts against the
    points (its fields (N,) for N points, or :meth:`HeadParams.columns` for (B, M) points)."""
    s = params.scale
    return _in_box(_geometry(params, x / s, y / s, z / s)["sdf"] * s, x, y, z)


def _in_box(sdf: torch.Tensor, x, y, z) -> torch.Tensor:
    """The SDF cut to the box |x|, |y|, |z| <= BOX (the neck would run out of EG3D's box)."""
    return torch.maximum(sdf, torch.maximum(torch.maximum(x.abs(), y.abs()), z.abs()) - BOX)


def _mix(base: torch.Tensor, colour, weight: torch.Tensor) -> torch.Tensor:
    """``base`` (..., 3) blended towards ``colour`` ((..., 3) or a 3-tuple) by ``weight`` (...)."""
    colour = torch.as_tensor(colour, dtype=base.dtype, device=base.device)
    return base + (colour - base) * weight[..., None]


def _albedo(p: HeadParams, x, y, z, g: dict[str, torch.Tensor]) -> torch.Tensor:
    """Albedo (..., 3) in [0, 1] at head-frame points, given their part distances ``g``."""
    ax = x.abs()
    shape = x.shape + (3,)

    # Skin, with painted details.
    skin = p.skin_colour.expand(shape)
    brow_x = ax - p.eye_x - 0.004
    brow_y = y - p.brow_y - 0.004 * (1 - (brow_x / 0.028).square()).clamp_min(0) + 0.003 * (brow_x / 0.028)
    brows = soft_inside(ellipse(brow_x, brow_y, 0.028, 0.0045 * p.brow_thickness), 0.001) * (z > 0.1)
    brow_colour = _mix(p.hair_colour * 0.6, GREY_HAIR, 0.6 * p.grey).clamp_max(0.32)
    skin = _mix(skin, brow_colour, 0.9 * brows)
    lid_edge = (g["ey"] - p.upper_lid * p.eye_r).abs() - 0.0012 - 0.0006 * (1 - p.masculine)
    lashes = soft_inside(lid_edge, 0.0006) * soft_inside(length2(g["ex"], g["ey"]) - p.eye_r - 0.004, 0.001)
    lashes = lashes * (g["ez"] > 0)
    skin = _mix(skin, (0.06, 0.04, 0.04), 0.85 * lashes)
    # Age: nasolabial folds, forehead lines, crow's feet and shadows under the eyes.
    fold = capsule(ax, y, torch.zeros_like(z), (0.030, g["tip_y"] - 0.008, 0.0),
                   (p.mouth_width + 0.010, p.mouth_y - 0.014, 0.0), 0.0012)  # a line in the (x, y) view
    forehead = (torch.sin(480 * (y - 0.1)) > 0.6).to(x.dtype) * ((y > 0.098) & (y < 0.142) & (ax < 0.06))
    crows = (torch.sin(700 * (y - p.eye_y) + 200 * ax) > 0.5).to(x.dtype) * soft_inside(
        length2(ax - p.eye_x - 0.032, y - p.eye_y) - 0.012, 0.002)
    bags = soft_inside(ellipse(g["ex"], g["ey"] + 0.026, 0.020, 0.006), 0.002) * (g["ez"] > -0.005)
    folds = (soft_inside(fold, 0.001) * 0.55 + forehead * 0.35 + crows * 0.4 + bags * 0.3) * p.wrinkles
    skin = skin * (1 - 0.45 * folds.clamp_max(1))[..., None]
    cheek = soft_inside(length2(ax - 0.066, y + 0.012) - 0.018, 0.008) * (z > 0.05)
    skin = _mix(skin, skin * torch.tensor((1.0, 0.72, 0.72), dtype=x.dtype, device=x.device), p.blush * cheek)
    stubble_colour = _mix(p.hair_colour * 0.55, GREY_HAIR, p.grey)
    skin = _mix(skin, stubble_colour, 0.7 * p.stubble * soft_inside(g["zone"], 0.004))
    skin = _mix(skin, MOUTH_INSIDE, soft_inside(g["cavity"] - 0.0015, 0.0006))
    nostrils = soft_inside(ellipsoid(ax - 0.0075, y - g["tip_y"] + 0.009, z - g["tip_z"] + 0.014, 0.005, 0.0035,
                                     0.006), 0.001)
    skin = _mix(skin, (0.1, 0.05, 0.04), 0.5 * nostrils)

    lips = _mix(p.lip_colour.expand(shape), MOUTH_INSIDE, soft_inside(g["my"].abs() - 0.0008 - 0.5 * p.mouth_open,
                                                                      0.0006) * 0.7)

    # Eyes: white, iris, pupil by the angle from the gaze axis.
    cos_gaze = g["ez"] / length2(length2(g["ex"], g["ey"]), g["ez"]).clamp_min(1e-6)
    iris = ((cos_gaze - 0.835) / 0.02).clamp(0, 1)
    pupil = ((cos_gaze - 0.968) / 0.01).clamp(0, 1)
    eyes = _mix(_mix(torch.as_tensor(EYE_WHITE, dtype=x.dtype, device=x.device).expand(shape), p.iris_colour, iris),
                (0.02, 0.02, 0.02), pupil)

    # Hair and beard: strands around the vertical axis, a parting line, greying (temples first, then the top).
    azimuth = torch.atan2(ax, z + 0.03)  # of |x|: mirror-symmetric strands
    strands = torch.sin(70 * azimuth + 6 * torch.sin(30 * y)) + 0.5 * torch.sin(157 * azimuth + 11 * y)
    late = 0.5 * (1 + torch.sin(23 * azimuth + 17 * y)) * 0.5 + 0.5 * (y / 0.25).clamp(0, 1)
    greying = (1.3 * p.grey - 0.3 * late + 0.12 * strands * p.grey * (1 - p.grey)).clamp(0, 1)
    shine = (1 + 0.06 * strands)[..., None]
    hair = _mix(p.hair_colour.expand(shape), GREY_HAIR, greying) * shine
    parting = soft_inside((x - 0.03 * p.parting).abs() - 0.002, 0.001) * (y > 0.18) * (z > -0.05)
    hair = hair * (1 - 0.25 * parting)[..., None]
    beard = _mix(p.hair_colour.expand(shape) * 0.85, GREY_HAIR, greying) * shine

    teeth = torch.as_tensor(TEETH, dtype=x.dtype, device=x.device).expand(shape)
    lens = torch.as_tensor(LENS, dtype=x.dtype, device=x.device).expand(shape)
    colours = {"skin": skin, "lips": lips, "eyes": eyes, "teeth": teeth, "hair": hair, "beard": beard,
               "frames": p.frame_colour.expand(shape), "lens": lens}
    # Each point takes the colour of the part it is closest to, softly.
    distances = torch.stack([g[name] for name in PARTS], dim=-1)  # (..., parts)
    weights = torch.softmax(-distances / COLOUR_SOFTNESS, dim=-1)
    return torch.stack([colours[name] for name in PARTS], dim=-2).mul(weights[..., None]).sum(-2).clamp(0, 1)


# Tetrahedron offsets of the normal estimate: n ~ sum_k v_k f(p + h v_k); the mean of f over them is f(p) + O(h^2).
_TETRA = ((1.0, -1.0, -1.0), (-1.0, -1.0, 1.0), (-1.0, 1.0, -1.0), (1.0, 1.0, 1.0))


def surface(params: HeadParams, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor):
    """SDF, unit normal and shaded colour at world points.

    Returns ``(sdf (...), normal (..., 3), rgb (..., 3) in [0, 1])``. The SDF here is the mean over the four
    tetrahedral samples of the normal estimate (equal to :func:`head_sdf` to O(NORMAL_STEP^2)), and colours use
    the part distances averaged the same way, so one call costs four SDF evaluations.
    """
    s = params.scale
    h = NORMAL_STEP / s
    xs, ys, zs = x / s, y / s, z / s
    samples = [_geometry(params, xs + h * vx, ys + h * vy, zs + h * vz) for vx, vy, vz in _TETRA]
    gradient = [sum(v[axis] * g["sdf"] for v, g in zip(_TETRA, samples)) for axis in range(3)]
    norm = length3(*gradient).clamp_min(1e-12)
    gradient = [g / norm for g in gradient]  # the unit normal's components
    normal = torch.stack(gradient, dim=-1)
    mean = {key: sum(g[key] for g in samples) / 4 for key in samples[0]}
    albedo = _albedo(params, xs, ys, zs, mean)
    lambert = sum(n * light for n, light in zip(gradient, LIGHT)).clamp_min(0)
    shade = AMBIENT + SKY * gradient[1] + DIFFUSE * lambert
    return _in_box(mean["sdf"] * s, x, y, z), normal, (albedo * shade[..., None]).clamp(0, 1)


def laplace_density(sdf: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """VolSDF density ``(1/beta) * Psi_beta(-sdf)``: 1/beta deep inside, 1/(2 beta) on the surface, decaying as
    exp(-sdf/beta)/(2 beta) outside."""
    e = 0.5 * torch.exp(-sdf.abs() / beta)
    return torch.where(sdf > 0, e, 1 - e) / beta


def field(params: HeadParams, points: torch.Tensor, *, beta: float = BETA) -> tuple[torch.Tensor, torch.Tensor]:
    """Density and colour of B heads at world points (B, M, 3) (head b at points[b]).

    Returns ``sigma`` (B, M, 1) >= 0 (:func:`laplace_density` of the SDF) and ``rgb`` (B, M, 3) in [0, 1], the
    shaded colour of :func:`surface` (view independent). Volume rendering them with fine steps reproduces
    :func:`faceworld.render.render`. Costs four SDF evaluations per point; pass M in chunks of ~1e5 per head on a
    CPU to bound memory.
    """
    if points.ndim != 3 or points.shape[0] != len(params) or points.shape[-1] != 3:
        raise ValueError(f"points must be ({len(params)}, M, 3), got {tuple(points.shape)}")
    sdf, _, rgb = surface(params.columns(1), points[..., 0], points[..., 1], points[..., 2])
    return laplace_density(sdf, beta)[..., None], rgb
