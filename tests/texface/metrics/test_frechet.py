"""texface.metrics.frechet against closed forms and samples of known Gaussians (float64)."""
from __future__ import annotations

import math

import pytest
import torch

from texface.metrics.frechet import frechet_distance, gaussian_frechet_distance


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
