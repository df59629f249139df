"""Shared eg3d test fixtures: a tiny seeded generator and its official network pickle."""
from __future__ import annotations

import pytest

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
