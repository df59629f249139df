"""Shared inversion test setup: a small Re-PoI encoder (fast on a CPU) saved against the tiny generator."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inversion.checkpoint import save_encoder
from inversion.encoder import RePoI

SMALL_ENCODER = dict(image_resolution=64, backbone_units=(1, 1, 1, 1), backbone_channels=(8, 16, 32, 512),
                     residual_widths=(8, 8, 16, 16))
TINY_GENERATOR = {"_target_": "eg3d.checkpoint.build_generator", "ckpt": None, "preset": "tiny", "seed": 0,
                  "neural_rendering_resolution": 16}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A small encoder checkpoint (seeded weights) that inverts into the tiny generator at a 16² render."""
    torch.manual_seed(0)
    return save_encoder(RePoI(**SMALL_ENCODER), tmp_path_factory.mktemp("encoder") / "enc", generator=TINY_GENERATOR)
