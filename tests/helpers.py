"""Helpers for tests: reference-fixture discovery and the fixtures' closeness criterion."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def fixtures_root() -> Path:
    return Path(os.environ.get("TEXFACE_FIXTURES", ROOT.parent / "shared" / "fixtures"))


def reference_fixture(name: str) -> Path:
    """Path of ``<fixtures>/<name>``; skip the test when it is absent, or fail when the run requires fixtures.

    ``.ci/run`` sets TEXFACE_REQUIRE_FIXTURES=1, so CI can never pass by skipping the parity tests.
    """
    path = fixtures_root() / name
    if not path.exists():
        message = (f"reference fixtures not found at {path}; set TEXFACE_FIXTURES to the folder holding "
                   f"eg3d_reference/ and scd_reference/")
        if os.environ.get("TEXFACE_REQUIRE_FIXTURES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, atol: float, rel: float, name: str = "") -> None:
    """The fixtures' criterion: max|a-b| <= atol and ||a-b|| / ||b|| <= rel."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.double() - expected.double())
    max_abs = diff.abs().max().item() if diff.numel() else 0.0
    denom = expected.double().norm().item()
    rel_err = diff.norm().item() / denom if denom > 0 else diff.norm().item()
    assert max_abs <= atol and rel_err <= rel, (
        f"{name}: max abs err {max_abs:.3e} (atol {atol:.1e}), rel err {rel_err:.3e} (rel {rel:.1e})")


def video_frames(path: Path) -> list:
    """The decoded frames (H, W, 3) uint8 of a video file."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        return list(reader.iter_data())
    finally:
        reader.close()
