"""scd.pipeline: the notebook API (load, call, get codes and images, render videos) on the shipped demo."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eg3d.checkpoint import build_generator
from helpers import video_frames
from scd.pipeline import DEMO_SCD, SCDPipeline
from texface.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def pipe():
    return SCDPipeline.from_pretrained(generator=build_generator(neural_rendering_resolution=32), device="cpu")


def test_five_lines_from_a_caption_to_pictures_and_an_orbit(pipe, tmp_path):
    out = pipe("This man has a beard.", num_samples=2, seed=0, steps=5)
    assert out.codes.shape == (2, 14, 512) and out.codes.device.type == "cpu"
    assert out.images.shape == (2, 128, 128, 3) and out.images.dtype == np.uint8
    assert out.conditions["captions"] == ["This man has a beard."] * 2 and out.conditions["steps"] == 5
    pipe.renderer.orbit_video(out.codes, tmp_path / "orbit.mp4", cameras=3)
    assert video_frames(tmp_path / "orbit.mp4")[0].shape == (128, 256, 3)  # two codes side by side
    assert pipe.source == DEMO_SCD


def test_the_call_is_the_sampler_then_the_renderer(pipe):
    torch.manual_seed(0)  # the renders' depth jitter
    out = pipe(["This man has a beard.", "She is smiling."], seed=3, steps=4)
    codes = pipe.sample(["This man has a beard.", "She is smiling."], num_samples=2, seed=3, steps=4)
    torch.testing.assert_close(out.codes, codes.cpu(), rtol=0, atol=0)
    torch.manual_seed(0)
    np.testing.assert_array_equal(out.images, pipe.renderer.render(codes))


def test_interpolation_and_morph_video(pipe, tmp_path):
    a, b = pipe.interpolate("This man has a beard.", "This woman has bangs.", num_samples=1, steps=3)
    torch.testing.assert_close(a, pipe.sample("This man has a beard.", steps=3).cpu(), rtol=0, atol=1e-6)
    path = pipe.renderer.morph_video(a[0], b[0], tmp_path / "morph.mp4", frames=3)
    frames = video_frames(path)
    assert len(frames) == 3 and np.abs(frames[0].astype(int) - frames[-1]).mean() > 1


def test_codes_only_and_loading_errors(tmp_path):
    codes_only = SCDPipeline.from_pretrained(generator=None, device="cpu")
    assert codes_only("This man has a beard.", steps=2).images is None and codes_only.renderer is None
    with pytest.raises(CheckpointError, match="SCD checkpoint not found"):
        SCDPipeline.from_pretrained(tmp_path / "missing", generator=None)
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="python -m scd.convert"):
        SCDPipeline.from_pretrained(tmp_path / "model.pt", generator=None)
    with pytest.raises(ConfigError, match="unknown sampling options"):
        codes_only.sample("a man", cfg_scale=3)
