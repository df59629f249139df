"""The Frechet distance between Gaussian fits of two samples (the statistic behind FID), in float64."""
from __future__ import annotations

import torch


def _sqrtm_psd(mat: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition (negative eigenvalues,
    which only come from rounding, are clipped to 0)."""
    vals, vecs = torch.linalg.eigh((mat + mat.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def gaussian_frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor,
                              cov2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), in float64.

    (C1^1/2 C2 C1^1/2)^1/2 is symmetric PSD and has the same trace as (C1 C2)^1/2, so two symmetric
    eigendecompositions give the trace without a general (non-symmetric) matrix square root.
    """
    mu1, mu2, cov1, cov2 = (torch.as_tensor(x).double() for x in (mu1, mu2, cov1, cov2))
    root1 = _sqrtm_psd(cov1)
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2.0 * cross)


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits (mean, unbiased covariance) of two samples (N, d) and (M, d)."""
    x, y = torch.as_tensor(x).double().flatten(1), torch.as_tensor(y).double().flatten(1)
    if x.shape[1] != y.shape[1] or x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"need two samples of >= 2 rows with the same dimension, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    return gaussian_frechet_distance(x.mean(0), torch.cov(x.T).reshape(x.shape[1], -1),
                                     y.mean(0), torch.cov(y.T).reshape(y.shape[1], -1))
