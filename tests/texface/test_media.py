"""texface.media: uint8 conversion, grids, and the atomic PNG / MP4 writers."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from helpers import video_frames
from texface.media import save_png, tile, to_uint8, write_mp4, write_mp4s


def test_to_uint8_and_tile():
    images = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(4, 1, 1, 1).expand(4, 3, 2, 3)
    out = to_uint8(images)
    assert out.shape == (4, 2, 3, 3) and out.dtype == np.uint8
    assert out[:, 0, 0, 0].tolist() == [0, 128, 255, 255]  # EG3D: x * 127.5 + 128, clamped, truncated
    assert np.array_equal(to_uint8(images[:, :1]), out)  # one channel (depth) becomes grey RGB
    grid = tile(out, ncols=3)  # 4 images on a 3-wide grid: 2 rows, last 2 cells black
    assert grid.shape == (4, 9, 3)
    assert grid[0, 3, 0] == 128 and grid[2, 0, 0] == 255 and (grid[2:, 3:] == 0).all()
    with pytest.raises(ValueError, match="expected images of shape"):
        to_uint8(torch.zeros(1, 2, 4, 4))


def test_write_mp4_pads_odd_sizes_and_is_atomic(tmp_path):
    frames = [np.full((5, 7, 3), 40 * i, np.uint8) for i in range(3)]
    path = write_mp4(iter(frames), tmp_path / "v.mp4", fps=5)
    decoded = video_frames(path)
    assert len(decoded) == 3 and decoded[0].shape == (6, 8, 3)
    assert np.allclose([f.mean() for f in decoded], [0, 40, 80], atol=2)  # H.264 is lossy; order and levels hold

    with pytest.raises(ValueError, match="same shape"):
        write_mp4([frames[0], np.zeros((6, 7, 3), np.uint8)], tmp_path / "bad.mp4")
    with pytest.raises(ValueError, match="at least one frame"):
        write_mp4([], tmp_path / "empty.mp4")
    with pytest.raises(ValueError, match="uint8 image"):
        save_png(np.zeros((4, 4, 3), np.float32), tmp_path / "x.png")
    assert sorted(os.listdir(tmp_path)) == ["v.mp4"]


def test_write_mp4s_writes_several_videos_from_one_stream(tmp_path):
    steps = [[np.full((4, 6, 3), 30 * i, np.uint8), np.full((2, 2, 3), 200 - 30 * i, np.uint8)] for i in range(3)]
    paths = write_mp4s(iter(steps), [tmp_path / "a.mp4", tmp_path / "b.mp4"], fps=5)
    a, b = (video_frames(p) for p in paths)
    assert len(a) == len(b) == 3 and a[0].shape == (4, 6, 3) and b[0].shape == (2, 2, 3)
    assert np.allclose([f.mean() for f in a], [0, 30, 60], atol=2)
    assert np.allclose([f.mean() for f in b], [200, 170, 140], atol=2)
    with pytest.raises(ValueError, match="each step must give 2 frames"):
        write_mp4s([[steps[0][0]]], [tmp_path / "c.mp4", tmp_path / "d.mp4"])
    assert sorted(os.listdir(tmp_path)) == ["a.mp4", "b.mp4"]  # a failed pair leaves neither video behind
