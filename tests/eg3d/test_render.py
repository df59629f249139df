"""`python -m eg3d.render`: files, their geometry and content, options, one-line errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from eg3d.checkpoint import build_generator, save_generator
from eg3d.render import render
from faceworld.render import BACKGROUND
from helpers import ROOT, video_frames
from texface.config import compose
from texface.errors import CheckpointError

TILE = 128  # the tiny preset's image size; its neural render is 64


def _tiny(overrides) -> list[str]:
    """The mechanics are tested on the tiny random generator (fast); the default (world) one has its own test."""
    return list(overrides) if any(o.startswith("generator=") for o in overrides) else ["generator=tiny", *overrides]


def _cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "eg3d.render", f"hydra.run.dir={tmp_path}", *_tiny(overrides)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)


def _render(tmp_path: Path, *overrides: str) -> list[Path]:
    return render(compose("render", ["render=fast", "progress=false", "device=cpu", f"out_dir={tmp_path}",
                                     *_tiny(overrides)]))


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def test_cli_writes_grid_and_orbit(tmp_path):
    result = _cli(tmp_path, "render=fast", "render.seeds=[0,1]", "render.views=[[0.3,0],[0,0],[-0.3,0]]",
                  "render.orbit.frames=3")
    assert result.returncode == 0, result.stderr
    grid = imageio.imread(tmp_path / "grid.png")
    assert grid.shape == (2 * TILE, 3 * TILE, 3) and grid.dtype == np.uint8
    frames = video_frames(tmp_path / "orbit.mp4")
    assert len(frames) == 3 and frames[0].shape == (TILE, TILE, 3)
    assert f"wrote {tmp_path / 'grid.png'}" in result.stdout and f"wrote {tmp_path / 'orbit.mp4'}" in result.stdout
    assert "grid: 100%" in result.stderr and "orbit: 100%" in result.stderr  # progress bars
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]


def test_grid_layout_rows_are_seeds_and_columns_are_views(tmp_path):
    # Depth maps: with random weights the colour images hardly change with the view, the geometry does.
    options = ("render.image_mode=image_depth", "render.orbit.seeds=[]")
    _render(tmp_path / "full", "render.seeds=[0,1]", "render.views=[[0.4,-0.2],[0,0]]", *options)
    _render(tmp_path / "one", "render.seeds=[1]", "render.views=[[0,0]]", *options)
    full = imageio.imread(tmp_path / "full" / "grid.png")
    one = imageio.imread(tmp_path / "one" / "grid.png")
    r = one.shape[0]
    assert full.shape == (2 * r, 2 * r, 3)
    # Seed 1 (row 2) at the frontal view (column 2); batches of different sizes may round a pixel differently.
    assert _diff(full[r:, r:], one).max() <= 2
    assert _diff(full[:r, r:], one).mean() > 20  # another seed
    assert _diff(full[r:, :r], one).mean() > 20  # another view
    assert not (tmp_path / "one" / "orbit.mp4").exists()


@pytest.mark.parametrize("mode, size", [("image_depth", 64), ("image_raw", 64), ("image", TILE)])
def test_image_modes(tmp_path, mode, size):
    written = _render(tmp_path, f"render.image_mode={mode}", "render.orbit.frames=2")
    grid = imageio.imread(tmp_path / "grid.png")
    assert written == [tmp_path / "grid.png", tmp_path / "orbit.mp4"]
    assert grid.shape == (size, size, 3) and len(video_frames(tmp_path / "orbit.mp4")) == 2
    if mode == "image_depth":  # grey, min-max scaled: spans the whole range
        assert (grid[..., 0] == grid[..., 1]).all() and (grid[..., 0] == grid[..., 2]).all()
        assert grid.min() == 0 and grid.max() == 255


def test_ckpt_shortcut_loads_our_checkpoint(tmp_path):
    G = build_generator(seed=5)
    save_generator(G, tmp_path / "ckpt")
    _render(tmp_path / "a", f"ckpt={tmp_path / 'ckpt'}", "render.orbit.seeds=[]")
    _render(tmp_path / "b", "generator.seed=5", "render.orbit.seeds=[]")
    _render(tmp_path / "c", "render.orbit.seeds=[]")  # seed 0: another generator
    a, b, c = (imageio.imread(tmp_path / x / "grid.png") for x in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_default_generator_shows_world_heads(tmp_path):
    # No generator named: the shipped face-world generator; a head in the middle, the world's background around.
    render(compose("render", ["render=fast", "progress=false", "device=cpu", f"out_dir={tmp_path}",
                              "render.seeds=[0,1]", "render.views=[[0,0]]", "render.orbit.seeds=[]"]))
    grid = imageio.imread(tmp_path / "grid.png").astype(np.float64) / 255
    background = np.array(BACKGROUND)  # stored as is in [0, 1]
    for row in (grid[:TILE], grid[TILE:]):
        assert np.abs(row[:8, :8] - background).max() < 0.06, row[:8, :8].mean((0, 1))
        assert np.abs(row[56:72, 56:72] - background).mean() > 0.15  # a face, not background
    assert np.abs(grid[:TILE] - grid[TILE:]).mean() > 0.01  # two seeds, two heads


def test_invalid_options_are_value_errors(tmp_path):
    cases = {"render.image_mode=normals": "render.image_mode must be one of",
             "render.noise_mode=loud": "render.noise_mode must be one of",
             "render.seeds=[]": "render.seeds must be a non-empty list",
             "render.views=[[0.1]]": r"render.views must be a list of \[yaw, pitch\] pairs",
             "render.orbit.frames=0": "render.orbit.frames must be positive",
             "generator=ffhq512": "this generator config needs a checkpoint"}
    for override, message in cases.items():
        with pytest.raises(ValueError, match=message):
            _render(tmp_path, override)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        _render(tmp_path, f"ckpt={tmp_path / 'bad'}")
    assert not (tmp_path / "grid.png").exists()


@pytest.mark.parametrize("overrides, message", [
    (["ckpt=/nonexistent/ckpt"], "error: checkpoint not found: /nonexistent/ckpt"),
    (["generator=ffhq512"], "error: this generator config needs a checkpoint"),
])
def test_cli_errors_are_one_line(tmp_path, overrides, message):
    result = _cli(tmp_path, *overrides)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(message), \
        result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "grid.png").exists()
