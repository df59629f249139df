"""The synthetic attribute world: determinism, captions and their parser, and the metrics against analytic values."""
from __future__ import annotations

import itertools
import math
import random
import re

import pytest
import torch

from scd import synthetic
from scd.data import StyleCodeSet
from scd.synthetic import (
    ATTRIBUTES,
    LEVEL_PRIORS,
    NUM_LEVELS,
    AttributeWorld,
    describe,
    frechet_distance,
    gaussian_frechet_distance,
    parse,
)


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


def test_parser_reads_every_phrase_of_every_level():
    # All attributes mentioned, every level combination, several random templates each.
    rng = random.Random(0)
    for g, *rest in itertools.product(range(2), range(6), range(6), range(6), range(6), range(6)):
        levels = dict(zip(ATTRIBUTES, (g, *rest)))
        if g == 0 and levels["beard"]:
            continue
        caption = describe(levels, rng, p_mention=1.0, p_gender=1.0)
        expected = {a: l for a, l in levels.items() if not (a == "beard" and g == 0)}
        assert parse(caption) == expected, caption
    for attr, kinds in synthetic.PHRASES.items():  # each phrase alone, in a neutral sentence
        for by_level in kinds.values():
            for level, phrases in enumerate(by_level):
                for phrase in phrases:
                    assert parse(f"The person {phrase.format(pos='their')}.") == {attr: level}, phrase


def test_parser_on_hand_written_captions():
    assert parse("This man has a beard.") == {"gender": 1, "beard": 3}
    assert parse("The woman has a fringe and wears glasses.") == {"gender": 0, "bangs": 3, "eyeglasses": 3}
    assert parse("This woman has no bangs.") == {"gender": 0, "bangs": 0}
    assert parse("This man has no fringe, no mustache, and no glasses.") == {"gender": 1, "bangs": 0,
                                                                            "eyeglasses": 0}
    assert parse("SHE WEARS SUNGLASSES AND IS GRINNING") == {"gender": 0, "eyeglasses": 5, "smiling": 3}
    assert parse("She isn\u2019t smiling.") == {"gender": 0, "smiling": 0}
    assert parse("This man has bangs and no bangs.") == {"gender": 1}  # contradictory: not scored
    assert parse("A man and a woman.") == {}
    assert parse("") == {} and parse("a photo of a face") == {}


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


def test_chance_levels_are_analytic(world):
    degree, presence = world.chance_accuracy("degree"), world.chance_accuracy("presence")
    assert degree["gender"] == pytest.approx(0.5) and presence["gender"] == pytest.approx(0.5)
    assert degree["smiling"] == pytest.approx(0.5 ** 2 + 5 * 0.1 ** 2)  # 0.30
    assert presence["bangs"] == pytest.approx(0.5)
    assert degree["age"] == pytest.approx(1 / 6) and presence["age"] == pytest.approx(1 / 36 + 25 / 36)
    # beard: stated levels follow the men's prior, code levels the population (half are women, level 0)
    assert degree["beard"] == pytest.approx(0.5 * 0.75 + 5 * 0.1 * 0.05)  # 0.40
    assert presence["beard"] == pytest.approx(0.5 * 0.75 + 0.5 * 0.25)


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
    with pytest.raises(ValueError, match=r"exps must have shape \(3, 50\)"):
        world.expression_error(sample.codes[:3], sample.expressions[:2])


def _independent_fd_2d(mu1, c1, mu2, c2) -> float:
    # For 2x2 PSD M: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)); M = C1^1/2 C2 C1^1/2 has tr(C1 C2), det C1 det C2.
    tr_sqrt = math.sqrt(float((c1 @ c2).trace()) + 2 * math.sqrt(float(c1.det() * c2.det())))
    return float((mu1 - mu2).pow(2).sum() + c1.trace() + c2.trace()) - 2 * tr_sqrt


def test_gaussian_frechet_distance_matches_closed_forms():
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    v1, v2 = torch.rand(6, generator=g, dtype=torch.float64) + 0.1, torch.rand(6, generator=g, dtype=torch.float64)
    diagonal = float((mu1 - mu2).pow(2).sum() + (v1.sqrt() - v2.sqrt()).pow(2).sum())
    assert gaussian_frechet_distance(mu1, torch.diag(v1), mu2, torch.diag(v2)) == pytest.approx(diagonal, abs=1e-10)
    for _ in range(5):
        a, b = torch.randn(2, 2, generator=g, dtype=torch.float64), torch.randn(2, 2, generator=g, dtype=torch.float64)
        c1, c2 = a @ a.T + 0.01 * torch.eye(2, dtype=torch.float64), b @ b.T
        expected = _independent_fd_2d(mu1[:2], c1, mu2[:2], c2)
        assert gaussian_frechet_distance(mu1[:2], c1, mu2[:2], c2) == pytest.approx(expected, abs=1e-9)
    assert gaussian_frechet_distance(mu1[:2], c1, mu1[:2], c1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_samples_from_known_gaussians():
    g = torch.Generator().manual_seed(1)
    mu1, mu2 = torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, -0.5, 0.0], dtype=torch.float64)
    std1, std2 = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), torch.tensor([1.5, 1.0, 0.5], dtype=torch.float64)
    x = mu1 + std1 * torch.randn(200_000, 3, generator=g, dtype=torch.float64)
    y = mu2 + std2 * torch.randn(200_000, 3, generator=g, dtype=torch.float64)
    expected = float((mu1 - mu2).pow(2).sum() + (std1 - std2).pow(2).sum())  # 1.25 + 1.25
    assert frechet_distance(x, y) == pytest.approx(expected, abs=0.03)
    with pytest.raises(ValueError, match="same dimension"):
        frechet_distance(x[:, :2], y)


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


def test_cli_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "synth"
    assert synthetic.main([str(out), "--n", "40", "--seed", "7"]) == 0
    data = StyleCodeSet.load(out)
    assert len(data) == 40 and data.meta["sample_seed"] == 7 and data.meta["world"] == AttributeWorld(0).config
    assert torch.equal(data.codes, AttributeWorld(0).sample(40, seed=7).codes)
    assert "wrote 40 codes" in capsys.readouterr().out
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("keep")
    assert synthetic.main([str(tmp_path / "busy"), "--n", "4"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to overwrite") and err.count("\n") == 1
    with pytest.raises(SystemExit) as info:
        synthetic.main([str(tmp_path / "zero"), "--n", "0"])
    assert info.value.code == 2 and not (tmp_path / "zero").exists()


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
