"""The scores every world that reads its codes back shares (the code-level ``scd.synthetic.AttributeWorld``, the
face world's ``faceworld.codes.WorldCodes``): each world brings its readers, :class:`CodeScores` turns them into the
metrics of sampled codes (attribute accuracy, expression error, Frechet distance) under one set of keys.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from texface.metrics.attributes import AttributeScores, accuracy_metrics, attribute_accuracy
from texface.metrics.frechet import frechet_distance
from texface.stylecodes import EXP_DIM


class CodeScores:
    """The scores of a world that reads its codes back (``scd.synthetic.AttributeWorld``,
    ``faceworld.codes.WorldCodes``). A subclass gives its readers of codes (N, 14, 512): ``labels_of(codes) ->
    {attribute: (N,) levels}``, ``recover_expression(codes) -> (N, 50)`` and ``features(codes) -> (N, F)`` (the
    space of the Frechet distance)."""

    def attribute_accuracy(self, codes: torch.Tensor, captions: Sequence[str], *,
                           mode: str = "degree") -> AttributeScores:
        """How often a code's levels (``labels_of``) agree with what its caption states (:func:`attribute_accuracy`;
        mode 'degree' or 'presence')."""
        _check_pairs(codes, captions)
        return attribute_accuracy(self.labels_of(codes), captions, mode=mode)

    def expression_error(self, codes: torch.Tensor, exp: torch.Tensor) -> float:
        """RMSE between ``exp`` (N, 50) and the expressions recovered from ``codes``."""
        exp = torch.as_tensor(exp)
        if tuple(exp.shape) != (len(codes), EXP_DIM):
            raise ValueError(f"exp must have shape ({len(codes)}, {EXP_DIM}), got {tuple(exp.shape)}")
        return float((self.recover_expression(codes) - exp.double().cpu()).pow(2).mean().sqrt())

    def frechet_distance(self, codes_a: torch.Tensor, codes_b: torch.Tensor) -> float:
        """Frechet distance between Gaussian fits of two code sets, over the world's ``features``."""
        return frechet_distance(self.features(codes_a), self.features(codes_b))

    def metrics(self, codes: torch.Tensor, captions: Sequence[str], exp: torch.Tensor,
                reference: torch.Tensor) -> dict[str, float]:
        """Every score of codes (N, 14, 512) sampled for ``captions`` and expressions ``exp`` (N, 50): the
        :func:`accuracy_metrics` of their levels (attr_acc/...), exp_error and fd (Frechet distance to the true
        ``reference`` codes)."""
        _check_pairs(codes, captions)
        return {**accuracy_metrics(self.labels_of(codes), captions), "exp_error": self.expression_error(codes, exp),
                "fd": self.frechet_distance(codes, reference)}


def _check_pairs(codes, captions: Sequence[str]) -> None:
    if len(captions) != len(codes):
        raise ValueError(f"got {len(codes)} codes but {len(captions)} captions; pass one caption per code")
