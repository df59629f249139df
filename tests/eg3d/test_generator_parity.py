"""TriPlaneGenerator against the official EG3D reference fixtures (../shared/fixtures/eg3d_reference/{tiny,mid}).

Each case builds the generator from meta.json's G_kwargs, loads G_state.safetensors with strict=True, rebuilds the
camera labels from the yaws/pitches in meta.json, and compares every tensor in io.safetensors, camera by camera,
with the README's float32 tolerances. Rendering is deterministic (the fixtures' sampling rule) with noise 'const'.
"""
from __future__ import annotations

import pytest

import torch
from helpers import assert_close

from eg3d_reference import RENDER_OUTPUTS, TOLERANCES, Case, compare, load_reference, rebuild_labels, run_case


@pytest.fixture(scope="module", params=["tiny", "mid"])
def case(request) -> Case:
    return run_case(request.param)


@pytest.mark.parametrize("key", ["c", "ws", "ray_origins", "ray_directions", "planes_stride4", "field_sigma",
                                 "field_rgb", *RENDER_OUTPUTS])
def test_matches_reference(case, key):
    compare(case, key)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["tiny", "mid"])
def test_matches_reference_on_gpu(name):
    """The same comparison on CUDA (conftest turns TF32 off)."""
    gpu_case = run_case(name, device="cuda")
    for key in TOLERANCES:
        compare(gpu_case, key)


def test_every_reference_tensor_is_checked(case):
    inputs = {"z", "field_coords", "field_dirs"}
    assert set(case.io) - inputs == set(TOLERANCES)


def test_image_raw_aliasing(case):
    """tiny: block0 of the 2X head does not upsample, so image_raw = feature_image[:, :3] + its toRGB output;
    mid: block0 of 8XDC upsamples first, so image_raw is exactly the clean render's first 3 channels."""
    raw, rgb = case.actual["image_raw"], case.actual["feature_image"][:, :3]
    if case.G.superresolution.block0_up == 1:
        assert (raw - rgb).abs().max() > 1e-2
        assert (case.io["image_raw"] - case.io["feature_image"][:, :3]).abs().max() > 1e-2
    else:
        assert torch.equal(raw, rgb)


# ----------------------------------------------------------------------------------------------------------------
# Settings on the tiny case only (cheap): unfused modconv, stochastic rendering, noise modes.

@pytest.fixture(scope="module")
def tiny():
    meta, io, G = load_reference("tiny")
    return meta, io, G, rebuild_labels(meta)


def test_unfused_modconv_matches_reference(tiny):
    meta, io, G, c = tiny
    with torch.no_grad():
        out = G.synthesis(io["ws"], c, noise_mode="const", deterministic=True, fused_modconv=False)
    for key in RENDER_OUTPUTS:
        assert_close(out[key], io[key], atol=TOLERANCES[key][0], rel=TOLERANCES[key][1], name=f"unfused {key}")


def test_default_rendering_is_stochastic_but_close(tiny):
    meta, io, G, c = tiny
    with torch.no_grad():
        torch.manual_seed(0)
        first = G.synthesis(io["ws"], c, noise_mode="const")
        torch.manual_seed(0)
        again = G.synthesis(io["ws"], c, noise_mode="const")
        torch.manual_seed(1)
        other = G.synthesis(io["ws"], c, noise_mode="const")
    det = {key: io[key] for key in RENDER_OUTPUTS}
    for key in RENDER_OUTPUTS:
        assert torch.equal(first[key], again[key]), f"{key}: same seed, different render"
        assert (first[key] - other[key]).abs().max() > 1e-3, f"{key}: default rendering is not random"
    # Jittered samples estimate the same integrals: per-pixel errors are small and the image statistics agree.
    assert (first["feature_image"] - det["feature_image"]).abs().mean() < 0.05
    assert (first["feature_image"].mean() - det["feature_image"].mean()).abs() < 0.01
    assert (first["weights_sum"].mean() - det["weights_sum"].mean()).abs() < 0.01
    assert (first["image"] - det["image"]).abs().mean() < 0.05
    # Coarse depths start at bin starts without jitter (half a bin nearer on average): within one bin width.
    rk = meta["G_kwargs"]["rendering_kwargs"]
    bin_width = (rk["ray_end"] - rk["ray_start"]) / (rk["depth_resolution"] - 1)
    assert (first["image_depth"].mean() - det["image_depth"].mean()).abs() < bin_width


def test_noise_modes(tiny):
    meta, io, G, c = tiny
    with torch.no_grad():
        const = G.backbone.synthesis(io["ws"], noise_mode="const")
        none = G.backbone.synthesis(io["ws"], noise_mode="none")
        torch.manual_seed(0)
        random_a = G.backbone.synthesis(io["ws"], noise_mode="random")
        torch.manual_seed(0)
        random_b = G.backbone.synthesis(io["ws"], noise_mode="random")
        random_c = G.backbone.synthesis(io["ws"], noise_mode="random")
    assert_close(const[:, :, ::4, ::4], io["planes_stride4"], atol=1e-4, rel=1e-5, name="const planes")
    assert (random_a - const).abs().max() > 1e-2
    assert (none - const).abs().max() > 1e-2
    assert torch.equal(random_a, random_b)
    assert (random_a - random_c).abs().max() > 1e-2
    with pytest.raises(ValueError, match="noise_mode"):
        G.backbone.synthesis(io["ws"], noise_mode="fixed")
