"""The Re-PoI encoder against the official forward pass (../shared/fixtures/repoi_reference, random weights):
every intermediate and output within the README's float32 tolerances."""
from __future__ import annotations

import pytest
import torch

from inversion.encoder import RePoI
from repoi_reference import compare, load_reference, seeded_weights


@pytest.fixture(scope="module")
def reference():
    meta, io, G = load_reference()
    model = RePoI().eval()
    model.load_state_dict(seeded_weights("repoi."), strict=True)
    return meta, io, G, model


@pytest.fixture(scope="module")
def stages(reference):
    """Every tensor the fixture records, computed stage by stage through the model's public methods."""
    meta, io, G, model = reference
    x, cam = io["x"], io["cam"]
    out = {}
    with torch.no_grad():
        out["cam_emb"] = cam_emb = model.cam_proj(cam)
        c3, p2, p1 = model.backbone(x)
        out.update(c3=c3, p2=p2, p1_stride2=p1[:, :, ::2, ::2])
        mapping, query = model.pose_mapping, model.w_plus_query.expand(len(x), -1, -1)
        out["query_coarse"] = mapping.transformerlayer_coarse(query, c3.flatten(2).transpose(1, 2), cam_emb)
        out["query_medium"] = mapping.transformerlayer_medium(out["query_coarse"], p2.flatten(2).transpose(1, 2),
                                                              cam_emb)
        out["codes_coarse"], _ = model.encode(x, cam)
        first = model.render(G, out["codes_coarse"], cam, deterministic=True)
        out.update(coarse_image=first["render"], coarse_depth=first["depth"], coarse=first["image"])
        r16, r32, r64 = model.residual_encoder(torch.cat([x, first["image"]], 1))
        out.update(res_16=r16, res_32=r32, res_64_stride2=r64[:, :, ::2, ::2])
        residual = model.pose_mapping_residual
        out["res_query_coarse"] = residual.transformerlayer_coarse(out["codes_coarse"], r16.flatten(2).transpose(1, 2),
                                                                   cam_emb)
        out["res_query_medium"] = residual.transformerlayer_medium(out["res_query_coarse"],
                                                                   r32.flatten(2).transpose(1, 2), cam_emb)
        out["codes_res"] = model.refine(x, first["image"], out["codes_coarse"], cam_emb)
        whole = model(x, cam, G, deterministic=True)
        second = model.render(G, whole["codes"], cam, deterministic=True)
        out.update(codes=whole["codes"], refine=whole["refine"], refine_depth=whole["refine_depth"],
                   refine_image=second["render"])
        assert torch.equal(whole["codes_coarse"], out["codes_coarse"])
        assert torch.equal(whole["coarse"], out["coarse"])
    return out


KEYS = ["cam_emb", "c3", "p2", "p1_stride2", "query_coarse", "query_medium", "codes_coarse", "coarse_image",
        "coarse_depth", "coarse", "res_16", "res_32", "res_64_stride2", "res_query_coarse", "res_query_medium",
        "codes_res", "codes", "refine_image", "refine_depth", "refine"]


@pytest.mark.parametrize("key", KEYS)
def test_matches_official_forward(reference, stages, key):
    meta, io, _, _ = reference
    compare(meta, io, key, stages[key])


def test_codes_are_twice_coarse_plus_corrections(stages):
    # The residual mapper's output contains its query: codes = codes_coarse + codes_res, codes_res ~ codes_coarse + δ.
    assert torch.allclose(stages["codes"], stages["codes_coarse"] + stages["codes_res"])


def test_input_shapes_are_checked(reference):
    _, io, G, model = reference
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, 256, 256\)"):
        model(io["x"][:, :, :128, :128], io["cam"], G)
    with pytest.raises(ValueError, match="cameras must have shape"):
        model(io["x"], io["cam"][:, :16], G)


def test_small_model_trains_through_the_frozen_generator(reference):
    """A small variant (fast tests) runs forward and backward at 64²; gradients reach the encoder, not the
    generator."""
    _, io, G, _ = reference
    torch.manual_seed(0)
    model = RePoI(image_resolution=64, backbone_units=(1, 1, 1, 1), backbone_channels=(8, 16, 32, 512),
                  residual_widths=(8, 8, 16, 16))
    x = torch.nn.functional.adaptive_avg_pool2d(io["x"], 64)
    out = model(x, io["cam"], G)
    assert out["codes"].shape == (2, 14, 512) and out["refine"].shape == (2, 3, 64, 64)
    ((out["refine"] - x) ** 2).mean().backward()
    assert model.w_plus_query.grad is not None and model.backbone.latlayer2.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in G.parameters())
