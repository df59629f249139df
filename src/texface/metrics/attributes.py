"""Attribute accuracy: how often the levels read from samples agree with what their captions state.

The reader is the world's business (the code-level world projects codes on its directions, the face world runs
its attribute classifier on renders); the scoring and its chance level are the same for every world.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from texface.captions import ATTRIBUTES, LEVEL_PRIORS, parse
from texface.options import check_choice

MODES = ("degree", "presence")


@dataclass
class AttributeScores:
    """Result of :func:`attribute_accuracy`.

    per_attribute: accuracy over the statements about each attribute; counts: number of those statements;
    chance: the accuracy of samples drawn independently of their captions (analytic); mean / chance_mean: their
    averages over the attributes that have statements; mode: 'degree' or 'presence'.
    """

    per_attribute: dict[str, float]
    counts: dict[str, int]
    chance: dict[str, float]
    mean: float
    chance_mean: float
    mode: str

    def as_dict(self, prefix: str = "attr_acc") -> dict[str, float]:
        """Flat {name: value} for loggers: <prefix>/mean, <prefix>/chance, <prefix>/<attribute>."""
        out = {f"{prefix}/mean": self.mean, f"{prefix}/chance": self.chance_mean}
        out.update({f"{prefix}/{a}": v for a, v in self.per_attribute.items()})
        return out


def chance_accuracy(mode: str = "degree") -> dict[str, float]:
    """Per-attribute accuracy of samples drawn from the priors independently of the captions.

    The stated levels follow the population prior (for beard: the men's prior, as women's captions never mention
    it) and the samples' levels the population marginal; chance = sum_k P(stated k) P(sample agrees).
    """
    check_choice("mode", mode, MODES)
    p_male = LEVEL_PRIORS["gender"][1]
    out = {}
    for a in ATTRIBUTES:
        stated = torch.tensor(LEVEL_PRIORS[a], dtype=torch.float64)
        sample = stated.clone()
        if a == "beard":
            sample = p_male * stated
            sample[0] += 1.0 - p_male
        if mode == "presence":
            stated = torch.stack([stated[0], stated[1:].sum()])
            sample = torch.stack([sample[0], sample[1:].sum()])
        out[a] = float((stated * sample).sum())
    return out


def attribute_accuracy(levels: dict[str, torch.Tensor], captions: Sequence[str], *,
                       mode: str = "degree") -> AttributeScores:
    """Score levels read from N samples (``levels[attribute]``: (N,) ints) against their N captions.

    For every (sample, caption) pair and every attribute the caption states (:func:`~texface.captions.parse`),
    mode='degree' needs the read level to equal the stated one (gender: the sign); mode='presence' only needs
    present (level >= 1) vs absent to agree. Captions that state nothing contribute nothing.

    Raises ValueError when the counts differ or no caption states anything.
    """
    check_choice("mode", mode, MODES)
    n = len(captions)
    for a in ATTRIBUTES:
        if len(levels[a]) != n:
            raise ValueError(f"got {len(levels[a])} samples but {n} captions; pass one caption per sample")
    hits = {a: 0 for a in ATTRIBUTES}
    counts = {a: 0 for a in ATTRIBUTES}
    for i, caption in enumerate(captions):
        for a, level in parse(caption).items():
            got = int(levels[a][i])
            if mode == "presence":
                got, level = min(got, 1), min(level, 1)
            hits[a] += int(got == level)
            counts[a] += 1
    stated = [a for a in ATTRIBUTES if counts[a]]
    if not stated:
        raise ValueError("none of the captions states a known attribute; use captions in the world's "
                         "vocabulary (e.g. 'This man has a beard.')")
    chance = chance_accuracy(mode)
    per = {a: hits[a] / counts[a] for a in stated}
    return AttributeScores(per_attribute=per, counts={a: counts[a] for a in stated},
                           chance={a: chance[a] for a in stated}, mean=sum(per.values()) / len(per),
                           chance_mean=sum(chance[a] for a in stated) / len(stated), mode=mode)


def accuracy_metrics(levels: dict[str, torch.Tensor], captions: Sequence[str], *,
                     prefix: str = "attr_acc") -> dict[str, float]:
    """Degree and presence scores of read ``levels`` against ``captions``, flat for loggers: <prefix>/mean,
    <prefix>/chance, <prefix>/<attribute> (degree), <prefix>_presence/mean and <prefix>_presence/chance."""
    metrics = attribute_accuracy(levels, captions).as_dict(prefix)
    presence = attribute_accuracy(levels, captions, mode="presence")
    metrics[f"{prefix}_presence/mean"] = presence.mean
    metrics[f"{prefix}_presence/chance"] = presence.chance_mean
    return metrics

