"""Head parameters: identity vectors from seeds, and the per-head tensors the SDF reads.

A head is fixed by three things:

- its attribute **levels** (``texface.captions.ATTRIBUTES``: gender 0/1, the others 0..5);
- its **identity**: ``IDENTITY_DIM`` standard normals drawn from a per-head integer seed
  (:func:`identity_from_seeds`), one per name in ``IDENTITY_FIELDS`` (head shape, features, colours). All of them
  are left-right symmetric except ``parting``, which shifts the hair parting and tilts the fringe: a head with
  ``identity[:, IDENTITY_FIELDS.index("parting")] = 0`` and a zero expression is mirror symmetric;
- its 50-d **expression** code (:mod:`faceworld.expression`).

:func:`make_params` turns them into a :class:`HeadParams`: named tensors with a leading batch dimension (scalars
(B,), colours (B, 3); lengths in the head's own frame, which ``scale`` maps to world units; colours linear RGB in
[0, 1]). The head SDF
(:mod:`faceworld.heads`) reads only these, so B heads evaluate in one vectorised call on any device.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from faceworld.expression import EXPRESSION_DIM, expression_controls
from texface.captions import ATTRIBUTES, NUM_LEVELS

IDENTITY_FIELDS = (
    "scale", "head_width", "head_length", "face_length", "jaw_width", "chin", "cheeks", "eye_spacing",
    "eye_size", "eye_height", "nose_length", "nose_width", "nose_tip", "mouth_width", "lip_fullness", "ear_size",
    "brow_thickness", "skin_tone", "skin_hue", "hair_colour", "hair_volume", "hair_length", "hairline",
    "iris_colour", "lip_colour", "parting",
)
IDENTITY_DIM = len(IDENTITY_FIELDS)
HEAD_SCALE = 1.18  # the head frame's unit in world units: makes heads as large in the frame as FFHQ's

# Colour palettes (linear RGB). Identity picks a continuous position along each, so colours vary smoothly.
SKIN_TONES = ((0.96, 0.80, 0.70), (0.90, 0.70, 0.56), (0.76, 0.55, 0.40), (0.56, 0.38, 0.26), (0.38, 0.24, 0.16))
HAIR_COLOURS = ((0.06, 0.05, 0.05), (0.17, 0.11, 0.07), (0.34, 0.21, 0.12), (0.52, 0.24, 0.10),
                (0.74, 0.58, 0.34), (0.86, 0.75, 0.52))
IRIS_COLOURS = ((0.25, 0.14, 0.07), (0.42, 0.28, 0.14), (0.32, 0.42, 0.26), (0.28, 0.45, 0.66))
GREY_HAIR = (0.80, 0.80, 0.78)

# Attribute level -> control tables (index = level).
SMILE_CURVE = (-0.15, 0.35, 0.75, 1.15, 1.5, 1.8)        # mouth-corner lift, in units of 0.014 at the corners
SMILE_OPEN = (0.0, 0.0, 0.0, 0.004, 0.010, 0.020)       # lip gap (teeth show from level 3)
SMILE_WIDTH = (1.0, 1.02, 1.06, 1.10, 1.15, 1.18)       # mouth width factor
FRINGE_DROP = (0.0, 0.022, 0.042, 0.065, 0.090, 0.120)  # how far below the hairline the bangs reach
FRAME_WIDTH = (0.0, 0.0020, 0.0028, 0.0042, 0.0068, 0.0068)  # half thickness of the spectacle frames
FRAME_SHADE = (0.0, 0.62, 0.30, 0.07, 0.05, 0.04)       # frame grey level: silver, grey, then black
BEARD_STUBBLE = (0.0, 0.30, 0.55, 0.80, 0.90, 0.95)     # darkening of the beard zone on the skin
BEARD_THICKNESS = (-0.02, -0.02, 0.0015, 0.007, 0.014, 0.024)  # beard shell over the jaw (< 0: none)
AGE_GREY = (0.0, 0.0, 0.12, 0.33, 0.60, 0.92)          # fraction of grey hair
AGE_WRINKLES = (0.0, 0.22, 0.38, 0.56, 0.78, 1.0)      # depth of folds and lines on the skin


@dataclasses.dataclass
class HeadParams:
    """Per-head tensors (B,) or (B, 3), all on one device. See :func:`make_params` for their meaning.

    The fields are plain tensors so that :meth:`map` can gather, move or reshape them all at once (e.g. to one
    entry per ray in flight, or to (B, 1) for broadcasting against (B, M) query points).
    """
    scale: torch.Tensor
    skull: torch.Tensor         # (B, 3) skull semi-axes
    jaw: torch.Tensor           # (B, 3) lower-face semi-axes
    jaw_drop: torch.Tensor      # chin drop from an open mouth
    jaw_side: torch.Tensor      # sideways shift of mouth and chin
    masculine: torch.Tensor     # 0 female, 1 male (jaw corners, neck)
    chin: torch.Tensor          # chin size factor
    cheeks: torch.Tensor        # cheek fullness factor
    eye_x: torch.Tensor
    eye_y: torch.Tensor
    eye_r: torch.Tensor
    upper_lid: torch.Tensor     # upper lid edge height over the eye centre, in eye radii
    lower_lid: torch.Tensor     # lower lid edge height, in eye radii (negative)
    brow_y: torch.Tensor
    brow_thickness: torch.Tensor
    nose_length: torch.Tensor
    nose_width: torch.Tensor
    nose_tip: torch.Tensor      # how far the tip stands out of the face
    mouth_y: torch.Tensor
    mouth_width: torch.Tensor
    smile: torch.Tensor         # corner lift factor (SMILE_CURVE)
    mouth_open: torch.Tensor    # lip gap
    lip_fullness: torch.Tensor
    lip_pout: torch.Tensor
    ear_size: torch.Tensor
    hair_thickness: torch.Tensor
    hair_long: torch.Tensor     # 0 short hair, 1 long hair down to the shoulders
    hair_length: torch.Tensor   # length factor of long hair
    hairline: torch.Tensor      # front hairline height
    parting: torch.Tensor       # -1..1, the one asymmetric identity feature
    fringe_drop: torch.Tensor   # bangs length below the hairline (0: none)
    beard_thickness: torch.Tensor
    stubble: torch.Tensor
    frame_width: torch.Tensor   # 0: no glasses
    frame_colour: torch.Tensor  # (B, 3)
    lens: torch.Tensor          # 1: dark sunglasses lenses
    grey: torch.Tensor
    wrinkles: torch.Tensor
    blush: torch.Tensor         # rosy cheeks, strongest in the young
    skin_colour: torch.Tensor   # (B, 3)
    hair_colour: torch.Tensor   # (B, 3) before greying
    iris_colour: torch.Tensor   # (B, 3)
    lip_colour: torch.Tensor    # (B, 3)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> HeadParams:
        """A HeadParams with ``fn`` applied to every field."""
        return HeadParams(**{f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def __len__(self) -> int:
        return self.scale.shape[0]

    def to(self, device) -> HeadParams:
        return self.map(lambda t: t.to(device))

    def index(self, index: torch.Tensor | slice) -> HeadParams:
        """The heads at ``index`` (a slice, or a long tensor on the params' device, repeats allowed)."""
        return self.map(lambda t: t[index])

    def columns(self, extra_dims: int = 1) -> HeadParams:
        """Every field with ``extra_dims`` singleton dims after the batch one, so it broadcasts against
        per-head point tensors (B, M, ...) (colours keep their trailing 3)."""
        def expand(t):
            return t.reshape(t.shape[:1] + (1,) * extra_dims + t.shape[1:])
        return self.map(expand)


def identity_from_seeds(seeds: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Identity vectors (n, IDENTITY_DIM) of standard normals, each drawn from its own integer seed (CPU)."""
    seeds = torch.as_tensor(seeds, dtype=torch.long).reshape(-1).tolist()
    out = torch.empty(len(seeds), IDENTITY_DIM)
    generator = torch.Generator()
    for i, seed in enumerate(seeds):
        generator.manual_seed(int(seed))
        out[i] = torch.randn(IDENTITY_DIM, generator=generator)
    return out


def _palette(colours: Sequence[Sequence[float]], position: torch.Tensor) -> torch.Tensor:
    """Colours (n, 3) at positions (n,) in [0, 1] along a palette, linearly interpolated."""
    table = torch.tensor(colours, dtype=position.dtype, device=position.device)
    scaled = position.clamp(0, 1) * (len(colours) - 1)
    low = scaled.floor().long().clamp_max(len(colours) - 2)
    frac = (scaled - low)[:, None]
    return table[low] * (1 - frac) + table[low + 1] * frac


def _table(values: Sequence[float], levels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)[levels.to(like.device)]


def make_params(levels: dict[str, torch.Tensor], identity: torch.Tensor, expressions: torch.Tensor) -> HeadParams:
    """HeadParams of n heads on the device of ``identity``.

    Args:
        levels: attribute -> (n,) long levels, for every attribute in ``texface.captions.ATTRIBUTES``.
        identity: (n, IDENTITY_DIM) standard normals (:func:`identity_from_seeds`).
        expressions: (n, EXPRESSION_DIM) expression codes (:mod:`faceworld.expression`).
    """
    n = identity.shape[0]
    if identity.ndim != 2 or identity.shape[1] != IDENTITY_DIM:
        raise ValueError(f"identity must be (n, {IDENTITY_DIM}), got {tuple(identity.shape)}")
    for attr in ATTRIBUTES:
        lv = levels[attr]
        if lv.shape != (n,) or (n and (int(lv.min()) < 0 or int(lv.max()) >= NUM_LEVELS[attr])):
            raise ValueError(f"levels[{attr!r}] must be ({n},) in 0..{NUM_LEVELS[attr] - 1}")
    if expressions.shape != (n, EXPRESSION_DIM):
        raise ValueError(f"expressions must be ({n}, {EXPRESSION_DIM}), got {tuple(expressions.shape)}")
    z = {name: identity[:, k] for k, name in enumerate(IDENTITY_FIELDS)}
    u = {name: torch.special.ndtr(v) for name, v in z.items()}  # uniform in (0, 1)
    t = {name: torch.tanh(0.6 * v) for name, v in z.items()}    # soft-bounded in (-1, 1)
    ctl = expression_controls(expressions.to(identity.device, identity.dtype))
    lv = {a: levels[a].to(identity.device) for a in ATTRIBUTES}
    male = lv["gender"].to(identity.dtype)
    age = lv["age"].to(identity.dtype) / 5

    skull = torch.stack([0.139 + 0.007 * t["head_width"] + 0.004 * male,
                         0.170 + 0.004 * t["head_length"] + 0.003 * male,
                         0.183 + 0.007 * t["head_length"]], dim=1)
    jaw = torch.stack([(0.098 + 0.008 * male) * (1 + 0.06 * t["jaw_width"]),
                       0.152 * (1 + 0.04 * t["face_length"]) + 0.004 * male + 0.003 * age,
                       0.132 + 0.004 * male], dim=1)
    smile = _table(SMILE_CURVE, lv["smiling"], identity)
    width = _table(SMILE_WIDTH, lv["smiling"], identity)
    jaw_open = 0.012 * ctl["jaw_open"]
    mouth_open = _table(SMILE_OPEN, lv["smiling"], identity) + jaw_open

    eye_r = 0.0205 * (1 + 0.06 * t["eye_size"]) * (1 - 0.04 * age)
    hairline = 0.150 + 0.010 * t["hairline"] + 0.012 * male * age ** 2  # men's hairlines recede with age
    frame = _table(FRAME_WIDTH, lv["eyeglasses"], identity)
    frame_colour = _table(FRAME_SHADE, lv["eyeglasses"], identity)[:, None].expand(n, 3) * torch.tensor(
        (1.0, 1.0, 1.05), dtype=identity.dtype, device=identity.device)

    tone = u["skin_tone"] ** 1.3  # lighter tones a bit more often
    skin = _palette(SKIN_TONES, tone) * (1 + 0.04 * torch.stack([t["skin_hue"], 0 * tone, -t["skin_hue"]], 1))
    skin = skin * (1 - 0.10 * age[:, None]) + 0.06 * age[:, None] * skin.mean(1, keepdim=True)  # duller with age
    hair_position = u["hair_colour"] * (1 - 0.65 * tone)  # darker skin, darker hair (mostly)
    ones = torch.ones_like(tone)
    lip = skin * torch.stack([0.88 + 0.05 * t["lip_colour"], 0.62 * ones, 0.64 * ones], dim=1)

    return HeadParams(
        scale=HEAD_SCALE * (1 + 0.025 * t["scale"] + 0.015 * male),
        skull=skull,
        jaw=jaw,
        jaw_drop=0.7 * jaw_open,
        jaw_side=0.008 * ctl["jaw_side"],
        masculine=male,
        chin=1 + 0.15 * t["chin"] + 0.15 * male,
        cheeks=1 + 0.2 * t["cheeks"] - 0.1 * age,
        eye_x=0.062 + 0.004 * t["eye_spacing"],
        eye_y=0.036 + 0.004 * t["eye_height"],
        eye_r=eye_r,
        upper_lid=0.5 - 0.5 * ctl["eye_close"] - 0.06 * age,
        lower_lid=-0.48 + 0.06 * smile.clamp_min(0),
        brow_y=0.075 + 0.008 * ctl["brow_raise"],
        brow_thickness=(1 + 0.25 * t["brow_thickness"]) * (1 + 0.3 * male),
        nose_length=(0.070 + 0.005 * t["nose_length"]) * (1 + 0.06 * age + 0.04 * male),
        nose_width=(0.0135 + 0.0015 * t["nose_width"]) * (1 + 0.1 * male),
        nose_tip=0.042 + 0.005 * t["nose_tip"] + 0.003 * male,
        mouth_y=-0.094 - 0.004 * t["face_length"],
        mouth_width=(0.044 + 0.003 * t["mouth_width"]) * width * (1 + 0.12 * ctl["mouth_stretch"]),
        smile=smile,
        mouth_open=mouth_open,
        lip_fullness=(1 + 0.2 * t["lip_fullness"]) * (1.15 - 0.2 * male) * (1 - 0.15 * age),
        lip_pout=0.004 * ctl["lip_pout"],
        ear_size=(1 + 0.08 * t["ear_size"]) * (1 + 0.06 * age),
        hair_thickness=0.010 + 0.006 * u["hair_volume"] + 0.008 * (1 - male),
        hair_long=1 - male,
        hair_length=0.8 + 0.4 * u["hair_length"],
        hairline=hairline,
        parting=t["parting"],
        fringe_drop=_table(FRINGE_DROP, lv["bangs"], identity),
        beard_thickness=_table(BEARD_THICKNESS, lv["beard"], identity),
        stubble=_table(BEARD_STUBBLE, lv["beard"], identity),
        frame_width=frame,
        frame_colour=frame_colour,
        lens=(lv["eyeglasses"] == 5).to(identity.dtype),
        grey=_table(AGE_GREY, lv["age"], identity),
        wrinkles=_table(AGE_WRINKLES, lv["age"], identity),
        blush=0.5 * (1 - age) ** 2 * (1 - 0.4 * male),
        skin_colour=skin.clamp(0, 1),
        hair_colour=_palette(HAIR_COLOURS, hair_position),
        iris_colour=_palette(IRIS_COLOURS, u["iris_colour"]),
        lip_colour=lip.clamp(0, 1),
    )
