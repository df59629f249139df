"""inversion.losses against the official Re-PoI fixture and closed forms, and the builders' errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from faceworld.readers import SHIPPED_READERS, IdentityEncoder
from inversion.losses import (
    BACKGROUND_DEPTH,
    background_depth,
    build_identity,
    build_lpips,
    embedding,
    identity_loss,
    mask_from_parsing,
    pixel_mse,
    w_norm,
)
from repoi_reference import compare, load_reference, seeded_weights
from texface.checkpoint import load_state_strict
from texface.errors import CheckpointError, ConfigError
from texface.metrics.arcface import ArcFace


@pytest.fixture(scope="module")
def reference():
    meta, io, _ = load_reference()
    return meta, io


def test_w_norm_matches_reference(reference):
    meta, io = reference
    compare(meta, io, "loss_w_norm", w_norm(io["codes"], io["latent_avg"]))
    compare(meta, io, "loss_w_norm_coarse", w_norm(io["codes_coarse"], io["latent_avg"]))
    # The 512-d average w broadcasts over the 14 rows (latent_avg is it repeated).
    compare(meta, io, "loss_w_norm", w_norm(io["codes"], io["latent_avg"][0, 0]))
    squared = (io["codes"] - io["latent_avg"]).pow(2).sum((1, 2)).mean()
    with pytest.raises(AssertionError):
        compare(meta, io, "loss_w_norm", squared)


def test_background_depth_and_mse_match_reference(reference):
    meta, io = reference
    mask = mask_from_parsing(io["parse_labels"])
    assert mask.shape == (2, 1, 256, 256) and mask.dtype == torch.float32
    compare(meta, io, "loss_depth", background_depth(io["refine_depth"], mask))
    # A bilinear mask is one of the mistakes the fixture catches.
    bilinear = F.interpolate(mask, size=(64, 64), mode="bilinear", align_corners=False)
    with pytest.raises(AssertionError):
        compare(meta, io, "loss_depth", background_depth(io["refine_depth"], bilinear))
    compare(meta, io, "loss_mse", pixel_mse(io["refine"], io["x"]))


def test_identity_loss_matches_reference(reference):
    meta, io = reference
    arcface = ArcFace()
    load_state_strict(arcface, seeded_weights("arcface."), source="seeded fixture weights", kind="ArcFace")
    compare(meta, io, "loss_id", identity_loss(arcface, io["refine"], io["x"]))


def test_w_norm_closed_forms():
    g = torch.Generator().manual_seed(0)
    w_avg = torch.randn(1, 14, 512, generator=g)
    assert w_norm(w_avg.expand(3, -1, -1), w_avg) == 0
    offsets = torch.randn(3, 14, 512, generator=g)
    expected = sum(torch.linalg.matrix_norm(o) for o in offsets) / 3
    torch.testing.assert_close(w_norm(w_avg + offsets, w_avg), expected)


def test_background_depth_mask_is_nearest_rows_and_columns_0_4_8():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(2, 1, 256, 256, generator=g) > 0.5).float()
    depth = torch.rand(2, 1, 64, 64, generator=g) + 2.5
    expected = ((depth - BACKGROUND_DEPTH) * (1 - mask[:, :, ::4, ::4])).pow(2).mean()
    torch.testing.assert_close(background_depth(depth, mask), expected, rtol=0, atol=0)
    assert background_depth(depth, torch.ones_like(mask)) == 0
    torch.testing.assert_close(background_depth(depth, torch.zeros_like(mask), target=2.0), (depth - 2).pow(2).mean())
    with pytest.raises(ValueError, match="mask_from_parsing"):
        background_depth(depth, torch.zeros(2, 256, 256, dtype=torch.long))


def test_identity_loss_with_the_face_world_encoder():
    encoder = build_identity("world")
    assert isinstance(encoder, IdentityEncoder)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(2, 3, 128, 128, generator=g) * 2 - 1 for _ in range(2))
    assert identity_loss(encoder, a, a).abs() < 1e-5
    expected = (1 - (encoder(a) * encoder(b)).sum(1)).mean()
    torch.testing.assert_close(identity_loss(encoder, a, b), expected)
    torch.testing.assert_close(embedding(encoder, a), encoder(a))


def test_build_identity_errors(tmp_path):
    with pytest.raises(ConfigError, match="model_ir_se50.pth"):
        build_identity("arcface")
    missing = tmp_path / "model_ir_se50.pth"
    with pytest.raises(ConfigError) as err:
        build_identity("arcface", missing)
    assert str(missing) in str(err.value)
    with pytest.raises(ConfigError, match="arcface, world"):
        build_identity("facenet")
    with pytest.raises(CheckpointError, match="not an identity encoder"):
        build_identity("world", SHIPPED_READERS["attribute_classifier"])


def test_build_lpips_needs_its_files(tmp_path):
    for backbone, heads in ((None, None), (tmp_path / "a.pth", None), (None, tmp_path / "alex.pth")):
        with pytest.raises(ConfigError, match="alexnet-owt-7be5be79.pth") as err:
            build_lpips("alex", backbone, heads)
        assert "\n" not in str(err.value)
    missing = tmp_path / "vgg16-397923af.pth"
    with pytest.raises(ConfigError) as err:
        build_lpips("vgg", missing, tmp_path / "vgg.pth")
    assert str(missing) in str(err.value)
    with pytest.raises(ConfigError, match="alex, vgg"):
        build_lpips("squeeze", missing, missing)
