"""faceworld.latents: any standard-normal vector is a head, with the world's level priors."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from faceworld.latents import EXPRESSION_SLICE, IDENTITY_SLICE, LATENT_DIM, levels_from_latents, params_from_latents
from faceworld.params import make_params
from texface.captions import ATTRIBUTES, LEVEL_PRIORS


def test_levels_follow_the_priors_and_women_have_no_beard():
    z = torch.randn(40000, LATENT_DIM, generator=torch.Generator().manual_seed(0))
    levels = levels_from_latents(z)
    for a in ATTRIBUTES:
        counts = torch.bincount(levels[a], minlength=len(LEVEL_PRIORS[a])).double() / len(z)
        prior = torch.tensor(LEVEL_PRIORS[a], dtype=torch.float64)
        if a == "beard":
            prior = 0.5 * prior
            prior[0] += 0.5
        assert (counts - prior).abs().max() < 0.01, a
    assert (levels["beard"][levels["gender"] == 0] == 0).all()


def test_thresholds_are_the_prior_quantiles():
    z = torch.zeros(3, LATENT_DIM)
    z[:, 1] = torch.tensor([-0.01, 0.01, 3.0])  # smiling: P(level 0) = 0.5, so the median splits 0 | 1
    assert levels_from_latents(z)["smiling"].tolist() == [0, 1, 5]


def test_params_are_make_params_of_the_slices():
    z = torch.randn(4, LATENT_DIM, generator=torch.Generator().manual_seed(1))
    ours = params_from_latents(z, expression_std=0.5)
    theirs = make_params(levels_from_latents(z), z[:, IDENTITY_SLICE], 0.5 * z[:, EXPRESSION_SLICE])
    for f in dataclasses.fields(ours):
        assert torch.equal(getattr(ours, f.name), getattr(theirs, f.name)), f.name
    with pytest.raises(ValueError, match="head latents must be"):
        params_from_latents(torch.zeros(2, 10))
