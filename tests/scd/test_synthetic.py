"""The synthetic attribute world: determinism, captions and their parser, and the metrics against analytic values."""
from __future__ import annotations

import math
import re

import pytest
import torch

from scd.synthetic import AttributeWorld
from texface.captions import ATTRIBUTES, LEVEL_PRIORS, NUM_LEVELS, parse
from texface.stylecodes import StyleCodeSet


@pytest.fixture(scope="module")
def world():
    return AttributeWorld(0)


@pytest.fixture(scope="module")
def sample(world):
    return world.sample(3000, seed=1)


def test_sampling_is_deterministic_by_seed(world):
    a, b = world.sample(50, seed=3), AttributeWorld(0).sample(50, seed=3)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.expressions, b.expressions)
    assert a.captions == b.captions and a.ids == b.ids and a.meta == b.meta
    c = world.sample(50, seed=4)
    assert not torch.equal(a.codes, c.codes) and a.captions != c.captions
    other = AttributeWorld(1)
    assert (other.directions - world.directions).abs().max() > 0.01
    rebuilt = AttributeWorld(**AttributeWorld(5, w_avg=torch.full((512,), 0.25), strength=2.0).config)
    assert rebuilt.config["w_avg"] == [0.25] * 512 and rebuilt.strength == 2.0
    assert torch.equal(rebuilt.sample(4, seed=0).codes, AttributeWorld(5, w_avg=torch.full((512,), 0.25),
                                                                      strength=2.0).sample(4, seed=0).codes)


def test_basis_is_orthonormal(world):
    gram = world.basis @ world.basis.T
    assert torch.allclose(gram, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-10)
    assert world.features(torch.zeros(1, 14, 512)).shape == (1, 6 + 50 + 32 + 32)


def test_sample_format_and_statistics(world, sample):
    assert isinstance(sample, StyleCodeSet) and sample.codes.shape == (3000, 14, 512)
    assert sample.expressions.shape == (3000, 50) and sample.cameras is None
    labels = {a: torch.tensor(v) for a, v in sample.meta["labels"].items()}
    for a in ATTRIBUTES:  # ground-truth levels follow the documented priors
        freq = torch.bincount(labels[a], minlength=NUM_LEVELS[a]).double() / 3000
        prior = torch.tensor(LEVEL_PRIORS[a], dtype=torch.float64)
        if a == "beard":
            prior = prior * 0.5 + torch.nn.functional.one_hot(torch.tensor(0), 6) * 0.5
        assert (freq - prior).abs().max() < 0.04, a
    assert (labels["beard"][labels["gender"] == 0] == 0).all()
    assert torch.equal(world.labels_of(sample.codes)["age"], labels["age"])
    # codes stay well inside the DDIM x0 clamp [-1, 1]
    assert sample.codes.abs().max() < 1.0 and 0.05 < sample.codes.std() < 0.3


def test_captions_vary_use_synonyms_and_leave_attributes_out(world, sample):
    caps = [c for cs in sample.captions for c in cs]
    n_none = sum(not cs for cs in sample.captions)
    assert abs(n_none / 3000 - world.p_uncaptioned) < 0.03
    assert max(len(cs) for cs in sample.captions) == world.max_captions
    assert len(set(caps)) > 0.8 * len(caps)
    text = " ".join(caps).lower()
    for word in ("bangs", "fringe", "glasses", "eyeglasses", "spectacles", "sunglasses", "smiling", "grinning",
                 "smile", "beard", "stubble", "thick", "slight", "a lot of", " no ", "twenties", "man", "woman",
                 "person", "he ", "she "):
        assert word in text, word
    starts = {re.split(r"\s", c)[0] for c in caps}
    assert {"This", "The", "A", "He", "She"} <= starts
    stated = [parse(c) for c in caps]
    assert all(stated), "every caption states something"
    rate = sum("smiling" in s for s in stated) / len(stated)
    assert 0.45 < rate < 0.6  # p_mention = 0.5, plus the rare forced mention
    assert 0.75 < sum("gender" in s for s in stated) / len(stated) < 0.85


def test_parser_inverts_the_sampled_captions(sample):
    labels = sample.meta["labels"]
    for i, caps in enumerate(sample.captions):
        for caption in caps:
            for a, level in parse(caption).items():
                assert labels[a][i] == level, (caption, a, level, labels[a][i])


def test_attribute_accuracy_is_one_on_true_codes(world, sample):
    captions = sample.first_captions()
    for mode in ("degree", "presence"):
        scores = world.attribute_accuracy(sample.codes, captions, mode=mode)
        assert scores.mean == 1.0 and set(scores.per_attribute) == set(ATTRIBUTES)
        assert sum(scores.counts.values()) == sum(len(parse(c)) for c in captions)
    # the noiseless code of each condition reads back exactly
    levels = {a: torch.tensor(v) for a, v in sample.meta["labels"].items()}
    means = world.codes_for(levels, sample.expressions, identity=False)
    assert all(torch.allclose(world.read_levels(means)[a], levels[a].double(), atol=1e-4) for a in ATTRIBUTES)


def test_attribute_accuracy_is_chance_on_shuffled_codes(world):
    data = world.sample(6000, seed=2)
    captions = data.first_captions()
    shuffled = data.codes[torch.randperm(6000, generator=torch.Generator().manual_seed(0))]
    for mode in ("degree", "presence"):
        scores = world.attribute_accuracy(shuffled, captions, mode=mode)
        for a in ATTRIBUTES:
            p, n = scores.chance[a], scores.counts[a]
            assert abs(scores.per_attribute[a] - p) < 4 * math.sqrt(p * (1 - p) / n) + 0.01, (mode, a)
        assert scores.chance_mean < 0.6 and scores.as_dict()["attr_acc/chance"] == scores.chance_mean


def test_attribute_accuracy_arguments(world, sample):
    with pytest.raises(ValueError, match="one caption per code"):
        world.attribute_accuracy(sample.codes[:3], ["a man"])
    with pytest.raises(ValueError, match="none of the captions states"):
        world.attribute_accuracy(sample.codes[:2], ["", "a face"])
    with pytest.raises(ValueError, match="mode"):
        world.attribute_accuracy(sample.codes[:1], ["a man"], mode="exact")
    with pytest.raises(ValueError, match=r"shape \(N, 14, 512\)"):
        world.labels_of(torch.zeros(2, 512))


def test_expression_error(world, sample):
    # recovery equals an independent float64 least-squares solve through the expression matrix
    flat = sample.codes[:20].double().flatten(1) - world.w_avg.double().flatten()
    reference = torch.linalg.lstsq(world.expression_matrix.double(), flat.T).solution.T
    assert torch.allclose(world.recover_expression(sample.codes[:20]), reference, atol=1e-4)
    # true pairs: only the isotropic noise leaks into the expression subspace
    floor = world.expression_floor()
    gains = torch.linspace(1.5, 0.5, 50, dtype=torch.float64) * world.exp_strength
    assert floor == pytest.approx(world.noise_std * float((1 / gains ** 2).mean().sqrt()))
    assert world.expression_error(sample.codes, sample.expressions) == pytest.approx(floor, rel=0.05)
    # shuffled pairs: sqrt(2) * exp_std apart on average
    shuffled = sample.expressions.roll(1, 0)
    expected = math.sqrt(2 * world.exp_std ** 2 + floor ** 2)
    assert world.expression_error(sample.codes, shuffled) == pytest.approx(expected, rel=0.05)
    with pytest.raises(ValueError, match=r"exp must have shape \(3, 50\)"):
        world.expression_error(sample.codes[:3], sample.expressions[:2])


def test_world_frechet_distance(world, sample):
    other = world.sample(3000, seed=5)
    same = world.frechet_distance(sample.codes, other.codes)
    assert 0 <= same < 2.0  # finite-sample bias only (120 dimensions, 3000 codes each)
    # a mean shift of s along one feature adds s^2 minus a cross term with the small mean difference
    delta = 1.5 * world.directions[0]
    shifted = world.frechet_distance(sample.codes, other.codes + delta)
    fa, fb = world.features(sample.codes), world.features(other.codes)
    cross = -2 * 1.5 * float(fa[:, 0].mean() - fb[:, 0].mean())
    assert shifted - same == pytest.approx(1.5 ** 2 + cross, abs=1e-4)
    # scaling a zero-mean set by 1.3 scales each covariance by 1.69: FD = (1 + 1.69 - 2 * 1.3) tr C = 0.09 tr C
    trace = float(torch.cov(fb.T).trace())
    assert world.frechet_distance(sample.codes, other.codes * 1.3) == pytest.approx(0.09 * trace, abs=2 * same)
    assert 0.09 * trace > 5 * same


def test_world_arguments_are_checked():
    with pytest.raises(ValueError, match="strength must be > 0"):
        AttributeWorld(strength=0)
    with pytest.raises(ValueError, match="p_mention must be a probability"):
        AttributeWorld(p_mention=1.5)
    with pytest.raises(ValueError, match=r"w_avg must be a finite \(512,\) or \(14, 512\)"):
        AttributeWorld(w_avg=torch.zeros(3))
    with pytest.raises(ValueError, match="n must be >= 1"):
        AttributeWorld().sample(0)
    w = AttributeWorld(w_avg=torch.full((14, 512), 0.5), identity_std=0.0, noise_std=0.0)
    data = w.sample(200, seed=0)
    assert w.attribute_accuracy(data.codes, data.first_captions()).mean == 1.0
    assert w.expression_error(data.codes, data.expressions) < 1e-4
