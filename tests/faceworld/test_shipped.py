"""The models shipped with the face world load, and do what their cards say on world heads they never saw
(small samples, CPU): the world generator (src/eg3d/assets/world), the attribute classifier and the identity
network (src/faceworld/assets); and faceworld.quality measures a generator."""
from __future__ import annotations

import json

import pytest
import torch

from eg3d.checkpoint import SHIPPED_GENERATORS, build_generator
from faceworld.clip import SHIPPED_CLIP
from faceworld.generator_fit import psnr, render_views
from faceworld.measure import measure
from faceworld.quality import generator_quality
from faceworld.readers import SHIPPED_READERS, load_reader
from faceworld.world import FaceWorld
from texface.captions import ATTRIBUTES
from texface.config import compose

UNSEEN = 7  # a sample seed no training used


@pytest.fixture(scope="module")
def world():
    return FaceWorld(0)


@pytest.fixture(scope="module")
def unseen(world):
    """24 heads of another sample seed, one view each at 64^2, with their levels."""
    latents = world.latents(24, seed=UNSEEN)
    images = world.render(world.params(latents), world.sample_cameras(24, seed=UNSEEN), 64)["image"]
    levels = world.heads_from_latents(latents).levels
    return latents, images, torch.stack([levels[a] for a in ATTRIBUTES], -1)


def test_every_shipped_model_has_a_card():
    for folder in [*SHIPPED_GENERATORS.values(), *SHIPPED_READERS.values(), SHIPPED_CLIP]:
        card = (folder / "MODEL_CARD.md").read_text()
        assert "python -m faceworld.fit" in card and "## How good it is" in card and "FIGURES" not in card, folder


def test_world_clip_matches_images_with_their_captions(world):
    from transformers import CLIPModel

    from faceworld.clip import clip_pixels
    from texface.tokenizer import default_tokenizer

    model = CLIPModel.from_pretrained(SHIPPED_CLIP).float().eval()
    heads = world.sample(64, seed=UNSEEN)
    keep = [i for i, c in enumerate(heads.captions) if c][:32]
    images = world.render(heads.params(), world.sample_cameras(64, seed=UNSEEN), 64)["image"][keep]
    captions = [heads.captions[i][0] for i in keep]
    with torch.no_grad():
        out = model(input_ids=default_tokenizer()(captions), pixel_values=clip_pixels(images, 64))
    similarity = out.image_embeds @ out.text_embeds.T                 # (32, 32) image x caption
    own = similarity.diag()
    beaten = (similarity > own[:, None]).float().sum(1)              # captions scoring above the image's own
    assert beaten.mean() < 0.2 * (len(keep) - 1), beaten             # chance: half of the others


def test_attribute_classifier_reads_unseen_heads(unseen):
    classifier = load_reader(SHIPPED_READERS["attribute_classifier"])
    _, images, truth = unseen
    read = torch.stack(list(classifier.levels(images).values()), -1)
    within_one = ((read - truth).abs() <= 1).float().mean(0)
    assert within_one.mean() >= 0.9, dict(zip(ATTRIBUTES, within_one.tolist()))
    assert (read[:, ATTRIBUTES.index("gender")] == truth[:, ATTRIBUTES.index("gender")]).float().mean() >= 0.9


def test_identity_network_tells_people_apart(world, unseen):
    encoder = load_reader(SHIPPED_READERS["identity_encoder"])
    latents, images, _ = unseen
    other_view = world.render(world.params(latents), world.sample_cameras(24, seed=UNSEEN + 1), 64)["image"]
    a, b = encoder(images), encoder(other_view)
    similarity = a @ b.T
    same, other = similarity.diag(), similarity[~torch.eye(24, dtype=torch.bool)]
    assert same.mean() > other.mean() + 0.5, (same.mean(), other.mean())
    assert (similarity.argmax(1) == torch.arange(24)).float().mean() >= 0.8  # rank-1 retrieval


def test_world_generator_renders_its_heads(world):
    G = build_generator(preset="world")
    assert G.z_dim == 82 and not G.training
    latents = world.latents(2, seed=0)                 # two of the heads it was fitted to
    cameras = world.sample_cameras(2, seed=UNSEEN)     # from cameras it never saw
    with torch.no_grad():
        out = render_views(G, latents, cameras[:, None], deterministic=True)["image"]
    target = world.render(world.params(latents), cameras, G.img_resolution)["image"]
    own, swapped = psnr(out, target), psnr(out, target.flip(0))
    assert (own > 18).all() and (own > swapped + 1).all(), (own, swapped)


def test_generator_quality_figures(world, tmp_path):
    G = build_generator(preset="world")
    classifier = load_reader(SHIPPED_READERS["attribute_classifier"])
    figures, picture = generator_quality(G, world, classifier, heads=1, views=1, progress=False)
    assert picture.shape == (2, 2, 3, 128, 128)  # world / generator x fitted head, new head
    # The PSNR is that of the picture's pairs (one view per head).
    assert figures["psnr/fitted_heads"] == pytest.approx(float(psnr(picture[1, :1], picture[0, :1])), abs=1e-3)
    assert figures["psnr/new_heads"] == pytest.approx(float(psnr(picture[1, 1:], picture[0, 1:])), abs=1e-3)
    assert figures["world/within_one/mean/fitted_heads"] >= 5 / 6
    assert {f"renders/exact/{a}/new_heads" for a in ATTRIBUTES} <= set(figures)


def test_measure_command_writes_its_figures(tmp_path):
    cfg = compose("measure", [f"out_dir={tmp_path}", "heads=1", "views=1", "progress=false", "device=cpu"])
    figures = measure(cfg)
    assert json.loads((tmp_path / "quality.json").read_text()) == pytest.approx(figures)
    assert (tmp_path / "quality.png").exists()
