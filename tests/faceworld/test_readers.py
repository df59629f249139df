"""faceworld.images, faceworld.readers, faceworld.reader_fit and faceworld.clip: labelled world images, the readers'
checkpoints, and a few training steps of each reader and of the world CLIP (tiny, CPU)."""
from __future__ import annotations

from functools import partial

import pytest
import torch

from faceworld.clip import WorldCLIPFit, world_clip
from faceworld.images import FaceWorldImages
from faceworld.reader_fit import AttributeClassifierFit, IdentityFit
from faceworld.readers import AttributeClassifier, IdentityEncoder, load_reader, save_reader
from faceworld.world import FaceWorld
from scd.text import TextEncoder
from texface.captions import ATTRIBUTES, parse
from texface.errors import CheckpointError


@pytest.fixture(scope="module")
def batch():
    data = FaceWorldImages(world=FaceWorld(0), train_heads=6, val_heads=4, views=2,
                           resolution=32, batch_size=6, steps_per_epoch=1, val_items=4)
    return data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)


def test_labelled_views(batch):
    assert batch["image"].shape == (6, 2, 3, 32, 32) and batch["levels"].shape == (6, 6)
    assert batch["head"].tolist() == list(range(6))
    for caption, levels in zip(batch["caption"], batch["levels"]):
        assert all(levels[ATTRIBUTES.index(a)] == level for a, level in parse(caption).items()), caption
    # Two views of one person differ (camera, expression), but less than two people do.
    same = (batch["image"][:, 0] - batch["image"][:, 1]).abs().mean()
    other = (batch["image"][:, 0] - batch["image"][:, 0].roll(1, 0)).abs().mean()
    assert 0 < same < other


def test_cached_renders_are_reused():
    data = FaceWorldImages(world=FaceWorld(0), train_heads=3, val_heads=2, resolution=16, batch_size=3,
                           steps_per_epoch=1, val_items=2, cache_renders=True)
    first = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    data.render = None  # a second epoch must not render again
    again = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    assert torch.allclose(again["image"], first["image"], atol=1e-2)  # float16 storage
    assert len(data.renders) == 3


def few_steps(module, batch, steps: int = 5) -> list[float]:
    optimizer = torch.optim.Adam(module.parameters(), lr=2e-3)
    losses = []
    for _ in range(steps):
        loss = module.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("make", [
    lambda: AttributeClassifierFit(model=AttributeClassifier(widths=(8, 16), resolution=32), optimizer=None),
    lambda: IdentityFit(model=IdentityEncoder(widths=(8, 16), dim=16, resolution=32), optimizer=None),
    lambda: WorldCLIPFit(model=world_clip(text_width=16, text_layers=1, text_heads=2, image_size=32, patch_size=8,
                                          vision_width=16, vision_layers=1, vision_heads=2, projection_dim=8),
                         optimizer=None),
], ids=["classifier", "identity", "clip"])
def test_a_few_steps_lower_the_loss(make, batch, monkeypatch):
    torch.manual_seed(0)
    module = make()
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    losses = few_steps(module, batch)
    assert losses[-1] < losses[0], losses


def test_reader_checkpoints_round_trip(tmp_path):
    model = AttributeClassifier(widths=(8, 16), resolution=32)
    save_reader(model, tmp_path / "c", extra={"validation": {"val/acc/mean": 0.5}})
    loaded = load_reader(tmp_path / "c")
    image = torch.randn(2, 3, 64, 64)
    for a in ATTRIBUTES:
        torch.testing.assert_close(loaded(image)[a], model.eval()(image)[a])
    save_reader(IdentityEncoder(widths=(8, 16), dim=4), tmp_path / "i", dtype=torch.float16)
    assert load_reader(tmp_path / "i")(image).norm(dim=-1).allclose(torch.ones(2), atol=1e-3)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_reader(tmp_path / "missing")


def test_world_clip_folder_is_a_text_tower_for_the_scd(tmp_path):
    module = WorldCLIPFit(model=world_clip(text_width=16, text_layers=1, text_heads=2, image_size=32,
                                           vision_width=16, vision_layers=1, vision_heads=2, projection_dim=8),
                          optimizer=partial(torch.optim.Adam, lr=1e-3))
    module.export(tmp_path / "clip", dtype="float16")
    tower = TextEncoder.from_pretrained(tmp_path / "clip")
    features = tower.encode(["This man has a beard."])
    assert features.shape == (1, 77, 16)
    ids = module.tokenizer(["This man has a beard."])
    with torch.no_grad():
        expected = module.model.text_model(input_ids=ids).last_hidden_state.half().float()
    torch.testing.assert_close(features, expected, atol=2e-2, rtol=0)
