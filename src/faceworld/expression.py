"""Expressions: a 50-d code (FLAME's size) drives six facial controls through fixed linear maps.

A code is ``exp`` ~ N(0, I_50). Its projections ``s = exp @ U`` onto the six orthonormal columns of ``U`` (50 x 6,
the Q of a QR decomposition of a Gaussian matrix drawn from ``torch.Generator().manual_seed(EXPRESSION_SEED)``;
the same in every world) are each N(0, 1). The controls are:

============== ======================= ============================================================
control        value                   effect on the head
============== ======================= ============================================================
jaw_open       relu(tanh(0.8 s0)) 0..1 lower lip and chin drop by up to 0.012 (teeth show); closed for half
brow_raise     tanh(0.8 s1)     -1..1  eyebrows move up/down by up to 0.008
eye_close      relu(tanh(0.8 s2)) 0..1 upper eyelids drop by up to half the eye radius (a squint)
jaw_side       tanh(0.6 s3)     -1..1  mouth and chin shift sideways by up to 0.008 (breaks symmetry)
mouth_stretch  tanh(0.6 s4)     -1..1  mouth width x (1 + 0.12 value) (stretched / puckered)
lip_pout       tanh(0.6 s5)     -1..1  lips move forward/back by up to 0.004
============== ======================= ============================================================

The other 44 directions of the code have no effect. The controls act on different handles from the ``smiling``
attribute (which sets the mouth-corner curve and, at levels 3..5, a wider opening with teeth), so the smile degree
stays readable under any expression. ``exp = 0`` is the neutral, symmetric face.
"""
from __future__ import annotations

import functools

import torch

EXPRESSION_DIM = 50
EXPRESSION_SEED = 50_2024
CONTROLS = ("jaw_open", "brow_raise", "eye_close", "jaw_side", "mouth_stretch", "lip_pout")
_GAINS = (0.8, 0.8, 0.8, 0.6, 0.6, 0.6)
_ONE_SIDED = ("jaw_open", "eye_close")  # controls that only act in one direction: a face can't open past shut


@functools.lru_cache(maxsize=1)
def expression_basis() -> torch.Tensor:
    """The fixed (50, 6) orthonormal map U from expression codes to control projections (CPU float32)."""
    generator = torch.Generator().manual_seed(EXPRESSION_SEED)
    q, _ = torch.linalg.qr(torch.randn(EXPRESSION_DIM, len(CONTROLS), generator=generator, dtype=torch.float64))
    return q.float()


def expression_controls(expressions: torch.Tensor) -> dict[str, torch.Tensor]:
    """Controls (see the module docstring) of codes (n, 50): a dict of (n,) tensors, on the codes' device."""
    if expressions.ndim != 2 or expressions.shape[1] != EXPRESSION_DIM:
        raise ValueError(f"expressions must be (n, {EXPRESSION_DIM}), got {tuple(expressions.shape)}")
    basis = expression_basis().to(expressions.device, expressions.dtype)
    projections = expressions @ basis  # (n, 6)
    controls = {}
    for k, name in enumerate(CONTROLS):
        value = torch.tanh(_GAINS[k] * projections[:, k])
        controls[name] = value.clamp_min(0) if name in _ONE_SIDED else value
    return controls
