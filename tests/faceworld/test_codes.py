"""faceworld.codes.WorldCodes: the face world's style codes for the SCD (the world generator's mapping of heads),
their captions and expressions, and the code probe that scores sampled codes."""
from __future__ import annotations

import pytest
import torch

from faceworld.codes import WorldCodes
from faceworld.latents import EXPRESSION_SLICE
from texface.captions import ATTRIBUTES, parse
from texface.config import instantiate
from texface.errors import ConfigError


@pytest.fixture(scope="module")
def world():
    return WorldCodes(0, probe_heads=2048)


@pytest.fixture(scope="module")
def data(world):
    return world.sample(300, seed=3)


def first_captions(data):
    keep = [i for i, c in enumerate(data.captions) if c]
    return keep, [data.captions[i][0] for i in keep]


def test_sample_is_the_heads_codes_captions_and_expressions(world, data):
    assert data.codes.shape == (300, 14, 512) and data.expressions.shape == (300, 50)
    assert torch.equal(data.codes[:, 0], data.codes[:, 13])               # one w per head
    latents = world.world.latents(300, seed=3)
    assert torch.equal(data.expressions, latents[:, EXPRESSION_SLICE])
    assert torch.allclose(data.codes, world.codes_of(latents))
    for i, captions in enumerate(data.captions):
        for caption in captions:
            for attribute, level in parse(caption).items():
                assert data.meta["labels"][attribute][i] == level, caption
    again = world.sample(300, seed=3)
    assert torch.equal(again.codes, data.codes) and again.captions == data.captions
    assert not torch.equal(world.sample(300, seed=4).codes, data.codes)


def test_probe_reads_true_codes_and_not_shuffled_ones(world, data):
    keep, captions = first_captions(data)
    codes, exp = data.codes[keep], data.expressions[keep]
    true = world.metrics(codes, captions, exp, data.codes)
    shuffled = world.metrics(codes.roll(1, 0), captions, exp, data.codes)
    assert true["attr_acc/mean"] >= 0.75 and true["attr_acc/gender"] >= 0.9, true
    assert shuffled["attr_acc/mean"] < true["attr_acc/chance"] + 0.15, shuffled
    assert true["exp_error"] < 0.5 < shuffled["exp_error"]
    assert true["fd"] < world.frechet_distance(codes * 0 + codes.mean(0), data.codes)
    scores = world.probe_scores(n=512)
    assert all(0.5 < scores[f"probe/{a}"] <= 1 for a in ATTRIBUTES), scores


def test_config_rebuilds_the_world(world, data):
    rebuilt = instantiate(world.config)
    assert torch.equal(rebuilt.sample(300, seed=3).codes, data.codes)
    with pytest.raises(ConfigError, match="probe_heads must be at least 1024"):
        WorldCodes(0, probe_heads=10)


def test_render_metrics_read_the_renders(world, data):
    keep, captions = first_captions(data)
    keep = [i for i, c in zip(keep, captions) if "gender" in parse(c)][:16]
    captions = [data.captions[i][0] for i in keep]
    true = world.render_metrics(data.codes[keep], captions)
    other = world.render_metrics(data.codes[keep].flip(0), captions)   # renders of other heads
    assert true["render_attr_acc/mean"] > true["render_attr_acc/chance"] + 0.1, true
    assert true["render_attr_acc/mean"] > other["render_attr_acc/mean"] + 0.1, (true, other)
