"""TriPlaneGenerator behaviour beyond the fixtures: configuration, conditioning, truncation, the SR heads."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from eg3d.camera import FFHQ_FOCAL, FFHQ_PIVOT, LookAtPoseSampler, camera_labels, intrinsics_from_focal
from eg3d.generator import TriPlaneGenerator
from eg3d.stylegan2 import SynthesisLayer
from eg3d.superresolution import (SuperresolutionHybrid2X, SuperresolutionHybrid4X, SuperresolutionHybrid8X,
                                  SuperresolutionHybrid8XDC, superresolution_class)

RENDERING_KWARGS = {
    "image_resolution": 128, "disparity_space_sampling": False, "clamp_mode": "softplus",
    "c_gen_conditioning_zero": False, "c_scale": 1.0, "superresolution_noise_mode": "none", "decoder_lr_mul": 1.0,
    "sr_antialias": True, "ray_start": 2.25, "ray_end": 3.3, "box_warp": 1, "avg_camera_radius": 2.7,
    "avg_camera_pivot": [0, 0, 0.2], "depth_resolution": 6, "depth_resolution_importance": 6,
    "superresolution_module": "training.superresolution.SuperresolutionHybrid2X",
}
SMALL = dict(z_dim=512, c_dim=25, w_dim=512, img_resolution=128, img_channels=3, sr_num_fp16_res=0,
             mapping_kwargs={"num_layers": 2}, rendering_kwargs=RENDERING_KWARGS,
             sr_kwargs={"channel_base": 2048, "channel_max": 64, "fused_modconv_default": "inference_only"},
             channel_base=2048, channel_max=64, fused_modconv_default="inference_only", num_fp16_res=0,
             conv_clamp=None)


def small_generator(**overrides) -> TriPlaneGenerator:
    kwargs = copy.deepcopy(SMALL)
    kwargs["rendering_kwargs"].update(overrides.pop("rendering_kwargs", {}))
    kwargs.update(overrides)
    torch.manual_seed(0)
    return TriPlaneGenerator(**kwargs).eval().requires_grad_(False)


def frontal_labels(batch: int) -> torch.Tensor:
    cam2world = LookAtPoseSampler.sample(torch.linspace(1.3, 1.8, batch), torch.full((batch,), 1.5), FFHQ_PIVOT,
                                         radius=2.7, batch_size=batch)
    return camera_labels(cam2world, intrinsics_from_focal(FFHQ_FOCAL))


def test_superresolution_module_selection():
    assert superresolution_class("training.superresolution.SuperresolutionHybrid8XDC") is SuperresolutionHybrid8XDC
    assert superresolution_class("SuperresolutionHybrid4X") is SuperresolutionHybrid4X
    with pytest.raises(ValueError, match="unknown superresolution_module"):
        superresolution_class("training.superresolution.SuperresolutionHybridDeepfp32")
    with pytest.raises(ValueError, match="img_resolution"):
        small_generator(img_resolution=256)  # 2X renders 128^2


def test_constructor_errors_are_readable():
    kwargs = copy.deepcopy(SMALL)
    del kwargs["rendering_kwargs"]["superresolution_noise_mode"]
    with pytest.raises(ValueError, match="superresolution_noise_mode"):
        TriPlaneGenerator(**kwargs)
    with pytest.raises(ValueError, match="img_channels"):
        small_generator(img_channels=4)
    with pytest.raises(ValueError, match="architecture"):
        small_generator(architecture="resnet")
    with pytest.raises(ValueError, match="JSON"):
        small_generator(rendering_kwargs={"extra": object()})


def test_init_kwargs_are_plain_data_and_rebuild_the_same_network():
    G = small_generator(num_fp16_res=4, sr_num_fp16_res=4)  # fp16 flags are accepted
    rebuilt = TriPlaneGenerator(**json.loads(json.dumps(G.init_kwargs)))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in G.state_dict().items()}
    assert G.init_kwargs["sr_num_fp16_res"] == 4 and G.init_kwargs["rendering_kwargs"] == RENDERING_KWARGS


def test_conv_clamp_settings_follow_the_official_defaults():
    G = small_generator(sr_num_fp16_res=4)
    layers = [m for m in G.superresolution.modules() if isinstance(m, SynthesisLayer)]
    assert layers and all(m.conv_clamp == 256 for m in layers)  # fp16 SR heads clamp at 256 in EG3D
    assert G.backbone.synthesis.b64.conv1.conv_clamp is None  # explicit conv_clamp=None
    kwargs = copy.deepcopy(SMALL)
    del kwargs["conv_clamp"]
    G = TriPlaneGenerator(**kwargs)
    assert G.backbone.synthesis.b64.conv1.conv_clamp == 256  # StyleGAN2's SynthesisBlock default
    # The clamp binds on the activation output.
    layer = SynthesisLayer(4, 4, w_dim=8, resolution=4, conv_clamp=0.5)
    with torch.no_grad():
        layer.bias.fill_(100.0)
    y = layer(torch.randn(2, 4, 4, 4), torch.randn(2, 8), noise_mode="none")
    assert y.max().item() == 0.5


def test_mapping_conditioning_and_truncation():
    G = small_generator()
    with torch.no_grad():
        G.backbone.mapping.w_avg.normal_()
    z, c = torch.randn(3, 512), frontal_labels(3)
    scaled = small_generator(rendering_kwargs={"c_scale": 2.0})
    scaled.load_state_dict(G.state_dict())
    zeroed = small_generator(rendering_kwargs={"c_gen_conditioning_zero": True})
    zeroed.load_state_dict(G.state_dict())
    with torch.no_grad():
        ws = G.mapping(z, c)
        assert ws.shape == (3, 14, 512) and torch.equal(ws[:, 0], ws[:, 13])
        torch.testing.assert_close(scaled.mapping(z, c), G.mapping(z, 2 * c))
        torch.testing.assert_close(zeroed.mapping(z, c), zeroed.mapping(z, torch.randn(3, 25)))
        assert (G.mapping(z, c) - G.mapping(z, torch.randn(3, 25))).abs().max() > 1e-3
        truncated = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=8)
        w_avg = G.backbone.mapping.w_avg
        torch.testing.assert_close(truncated[:, :8], w_avg + 0.5 * (ws[:, :8] - w_avg))
        assert torch.equal(truncated[:, 8:], ws[:, 8:])
        torch.testing.assert_close(G.mapping(z, c, truncation_psi=0.5), w_avg + 0.5 * (ws - w_avg))

        before = w_avg.clone()
        G.mapping(z, c, update_emas=True)
        torch.testing.assert_close(G.backbone.mapping.w_avg, ws[:, 0].mean(0) + 0.998 * (before - ws[:, 0].mean(0)))
    with pytest.raises(ValueError, match="z must have shape"):
        G.mapping(torch.randn(3, 10), c)


def test_forward_synthesis_outputs_and_resolution():
    G = small_generator()
    z, c = torch.randn(2, 512), frontal_labels(2)
    with torch.no_grad():
        out = G(z, c, truncation_psi=0.7, neural_rendering_resolution=16, noise_mode="const", deterministic=True)
        ref = G.synthesis(G.mapping(z, c, truncation_psi=0.7), c, 16, noise_mode="const", deterministic=True)
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"image": (2, 3, 128, 128), "image_raw": (2, 3, 16, 16), "image_depth": (2, 1, 16, 16),
                      "feature_image": (2, 32, 16, 16), "weights_sum": (2, 1, 16, 16),
                      "planes": (2, 3, 32, 256, 256)}
    for key in out:
        assert torch.equal(out[key], ref[key]), key
    # R=16 is resized to the 2X head's 64^2 input, so nothing aliases the raw image.
    assert torch.equal(out["image_raw"], out["feature_image"][:, :3])
    assert G.neural_rendering_resolution == 64  # a per-call resolution does not change the default
    with pytest.raises(ValueError, match="ws must be"):
        G.synthesis(torch.zeros(2, 13, 512), c)
    with pytest.raises(ValueError, match="c must be"):
        G.synthesis(torch.zeros(2, 14, 512), c[:1])


def test_superresolution_head_layouts():
    """Block channels/resolutions and the FIR buffer of each head, as the official classes define them."""
    layouts = {  # head: (block0 conv0 weight, block0 noise size, block1 torgb weight, has resample_filter)
        SuperresolutionHybrid2X: ((128, 32, 3, 3), 64, (3, 64, 1, 1), True),
        SuperresolutionHybrid4X: ((128, 32, 3, 3), 128, (3, 64, 1, 1), True),
        SuperresolutionHybrid8X: ((128, 32, 3, 3), 256, (3, 64, 1, 1), True),
        SuperresolutionHybrid8XDC: ((256, 32, 3, 3), 256, (3, 128, 1, 1), False),
    }
    for head, (conv0, noise, torgb, has_filter) in layouts.items():
        sr = head(32, head.output_resolution, 0, True)
        state = sr.state_dict()
        assert tuple(state["block0.conv0.weight"].shape) == conv0, head.__name__
        assert tuple(state["block0.conv0.noise_const"].shape) == (noise, noise), head.__name__
        assert tuple(state["block1.torgb.weight"].shape) == torgb, head.__name__
        assert ("resample_filter" in state) == has_filter, head.__name__


@pytest.mark.parametrize("resolution,aliased", [(128, True), (64, False)])
def test_4x_head_reproduces_the_inplace_raw_image(resolution, aliased):
    """Official 4X: no resize for a 128^2 render and block0 does not upsample, so block0's in-place toRGB add lands
    in the caller's rgb; a 64^2 render is resized first and the caller's rgb stays clean."""
    torch.manual_seed(0)
    sr = SuperresolutionHybrid4X(32, 256, 0, True).eval()
    for name, param in sr.named_parameters():
        if name.endswith("torgb.bias"):
            param.data.normal_()
    x = torch.randn(1, 32, resolution, resolution)
    rgb = x[:, :3]
    ws = torch.randn(1, 14, 512)
    rgb_clone = rgb.clone()
    with torch.no_grad():
        image, raw = sr(rgb, x, ws, noise_mode="none")
        if aliased:
            _, torgb_only = sr.block0(x, None, ws[:, -1:].repeat(1, 3, 1), noise_mode="none")
            torch.testing.assert_close(raw, rgb + torgb_only)
        else:
            assert torch.equal(raw, rgb)
    assert image.shape == (1, 3, 256, 256)
    assert torch.equal(rgb, rgb_clone) and torch.equal(x[:, :3], rgb_clone)  # nothing was modified in place
    with pytest.raises(ValueError, match="at most 128"):
        sr(torch.zeros(1, 3, 256, 256), torch.zeros(1, 32, 256, 256), ws)
