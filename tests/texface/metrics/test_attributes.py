"""texface.metrics.attributes: analytic chance levels and the scoring of read levels against captions."""
from __future__ import annotations

import pytest
import torch

from texface.captions import ATTRIBUTES
from texface.metrics.attributes import attribute_accuracy, chance_accuracy


def test_chance_levels_are_analytic():
    degree, presence = chance_accuracy("degree"), chance_accuracy("presence")
    assert degree["gender"] == pytest.approx(0.5) and presence["gender"] == pytest.approx(0.5)
    assert degree["smiling"] == pytest.approx(0.5 ** 2 + 5 * 0.1 ** 2)  # 0.30
    assert presence["bangs"] == pytest.approx(0.5)
    assert degree["age"] == pytest.approx(1 / 6) and presence["age"] == pytest.approx(1 / 36 + 25 / 36)
    # beard: stated levels follow the men's prior, code levels the population (half are women, level 0)
    assert degree["beard"] == pytest.approx(0.5 * 0.75 + 5 * 0.1 * 0.05)  # 0.40
    assert presence["beard"] == pytest.approx(0.5 * 0.75 + 0.5 * 0.25)


def test_scores_count_every_stated_attribute():
    levels = {a: torch.zeros(3, dtype=torch.long) for a in ATTRIBUTES}
    levels["gender"] = torch.tensor([1, 0, 1])
    levels["beard"] = torch.tensor([3, 0, 1])
    captions = ["This man has a beard.", "This woman has no bangs.", "This man has a thick beard."]
    scores = attribute_accuracy(levels, captions)
    assert scores.counts == {"gender": 3, "bangs": 1, "beard": 2}
    assert scores.per_attribute == {"gender": 1.0, "bangs": 1.0, "beard": 0.5}  # level 1 read, 4 stated
    assert attribute_accuracy(levels, captions, mode="presence").per_attribute["beard"] == 1.0
    assert scores.mean == pytest.approx(2.5 / 3)
    with pytest.raises(ValueError, match="one caption per sample"):
        attribute_accuracy(levels, captions[:2])
    with pytest.raises(ValueError, match="none of the captions states"):
        attribute_accuracy({a: v[:1] for a, v in levels.items()}, ["a face"])
