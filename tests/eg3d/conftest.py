"""Shared eg3d test fixtures: a tiny seeded generator and its official network pickle."""
from __future__ import annotations

import pytest
import torch

from eg3d.camera import orbit_labels
from eg3d.checkpoint import build_generator
from official_eg3d import write_official_pickle


@pytest.fixture(scope="module")
def tiny():
    G = build_generator(preset="tiny", seed=3)
    G.neural_rendering_resolution = 32  # not the constructor's default: must come from the pickled state
    return G


@pytest.fixture(scope="module")
def official_pkl(tiny, tmp_path_factory):
    return write_official_pickle(tmp_path_factory.mktemp("pkl") / "network-snapshot.pkl", tiny)


@pytest.fixture(scope="module")
def small():
    """The tiny preset at a 16^2 render (fast on a CPU), two style codes and three orbit cameras."""
    G = build_generator(preset="tiny", seed=0, neural_rendering_resolution=16)
    ws = G.mapping(torch.randn(2, 512, generator=torch.Generator().manual_seed(0)), orbit_labels(2),
                   truncation_psi=0.7)
    return G, ws, orbit_labels(3)
