"""texface.captions: the shared attribute levels, priors and caption grammar (describe / parse)."""
from __future__ import annotations

import itertools
import random

import torch

from texface import captions
from texface.captions import ATTRIBUTES, LEVEL_PRIORS, caption_lists, describe, parse, sample_levels


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
    for attr, kinds in captions.PHRASES.items():  # each phrase alone, in a neutral sentence
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


def test_sampled_levels_follow_the_priors_and_women_have_no_beard():
    levels = sample_levels(20000, torch.Generator().manual_seed(0))
    for a in ATTRIBUTES:
        counts = torch.bincount(levels[a], minlength=len(LEVEL_PRIORS[a])).double() / 20000
        prior = torch.tensor(LEVEL_PRIORS[a], dtype=torch.float64)
        if a == "beard":  # the men's prior, zero for women
            prior = 0.5 * prior
            prior[0] += 0.5
        assert (counts - prior).abs().max() < 0.015, a
    assert (levels["beard"][levels["gender"] == 0] == 0).all()


def test_caption_lists_state_the_levels_and_leave_some_faces_uncaptioned():
    levels = sample_levels(500, torch.Generator().manual_seed(1))
    rows = {a: v.tolist() for a, v in levels.items()}
    lists = caption_lists(rows, random.Random(0), max_captions=3, p_uncaptioned=0.2)
    assert len(lists) == 500 and 0.12 < sum(not c for c in lists) / 500 < 0.28
    assert max(len(c) for c in lists) == 3
    for i, caps in enumerate(lists):
        for caption in caps:
            assert all(rows[a][i] == level for a, level in parse(caption).items()), caption
    assert lists == caption_lists(rows, random.Random(0), max_captions=3, p_uncaptioned=0.2)  # seeded
