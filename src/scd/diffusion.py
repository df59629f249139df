"""Gaussian diffusion over style codes: schedule, training loss and samplers (DDIM and ancestral).

The module holds only the schedule (float32 buffers computed in float64, as the official code does) and does
not know the network: the loss and the samplers take ``model_fn(x_t, t) -> prediction``, so classifier-free
guidance, condition dropout and caching of text features all live with the caller. ``t`` is always a long
tensor (B,).

Parameterisations (objective): 'v' (the paper's) predicts v = sqrt(a) eps - sqrt(1 - a) x0, 'eps' predicts the
noise, 'x0' the clean code, where a = alpha_bar_t. Samplers turn any of them into (x0, eps); when ``clamp`` is
set, x0 is clamped and eps recomputed from the clamped x0 (the official DDIM step).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

ModelFn = Callable[[Tensor, Tensor], Tensor]
StepCallback = Callable[[int, int, Tensor], None]

SCHEDULES = ("cosine", "linear")
OBJECTIVES = ("v", "eps", "x0")
LOSS_TYPES = ("l1", "l2")
LOSS_WEIGHTS = ("alpha_bar", "none", "min_snr")


def cosine_betas(timesteps: int, s: float = 0.008) -> Tensor:
    """Cosine schedule (Nichol & Dhariwal) in float64, betas clipped to [0, 0.999]."""
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    alpha_bar = torch.cos((x / timesteps + s) / (1 + s) * math.pi * 0.5) ** 2
    alpha_bar = alpha_bar / alpha_bar[0]
    return torch.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 0, 0.999)


def linear_betas(timesteps: int) -> Tensor:
    """DDPM linear schedule in float64, rescaled so that any number of steps spans the same noise range."""
    scale = 1000 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)


def ddim_times(timesteps: int, steps: int) -> Tensor:
    """The official DDIM time grid: linspace(-1, T-1, steps+1) truncated to int, reversed: T-1, ..., -1."""
    return torch.linspace(-1, timesteps - 1, steps + 1).int().flip(0).long()


def _gather(buffer: Tensor, t: Tensor, ndim: int) -> Tensor:
    """buffer[t] shaped (B, 1, ..., 1) to broadcast against a (B, ...) tensor of ``ndim`` dims."""
    return buffer[t].reshape(-1, *([1] * (ndim - 1)))


class GaussianDiffusion(nn.Module):
    """Diffusion schedule, loss and samplers.

    Args (keyword-only):
        timesteps: number of diffusion steps T.
        schedule: 'cosine' (s = 0.008, the paper's) or 'linear'.
        objective: what the network predicts: 'v' (the paper's), 'eps' or 'x0'.
        loss_type: 'l1' (the paper's) or 'l2'.
        loss_weight: per-timestep weight of the loss: 'alpha_bar' (= snr / (snr + 1), the official weight for
            v-prediction), 'none', or 'min_snr' (min(snr, gamma) divided by snr + 1, snr or 1 for 'v', 'eps',
            'x0': the min-SNR-gamma weighting).
        min_snr_gamma: gamma of 'min_snr'.
    """

    def __init__(self, *, timesteps: int = 1000, schedule: str = "cosine", objective: str = "v",
                 loss_type: str = "l1", loss_weight: str = "alpha_bar", min_snr_gamma: float = 5.0):
        super().__init__()
        if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
            raise ValueError(f"timesteps must be a positive integer, got {timesteps!r}")
        for name, value, choices in (("schedule", schedule, SCHEDULES), ("objective", objective, OBJECTIVES),
                                     ("loss_type", loss_type, LOSS_TYPES),
                                     ("loss_weight", loss_weight, LOSS_WEIGHTS)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        if min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma must be positive, got {min_snr_gamma}")
        self.config = dict(timesteps=timesteps, schedule=schedule, objective=objective, loss_type=loss_type,
                           loss_weight=loss_weight, min_snr_gamma=float(min_snr_gamma))
        self.num_timesteps = timesteps
        self.objective = objective
        self.loss_type = loss_type

        betas = cosine_betas(timesteps) if schedule == "cosine" else linear_betas(timesteps)   # float64
        alphas = 1 - betas
        alpha_bar = torch.cumprod(alphas, dim=0)
        alpha_bar_prev = F.pad(alpha_bar[:-1], (1, 0), value=1.0)
        snr = alpha_bar / (1 - alpha_bar)
        if loss_weight == "alpha_bar":
            weight = snr / (snr + 1)
        elif loss_weight == "none":
            weight = torch.ones_like(snr)
        else:
            clipped = snr.clamp(max=min_snr_gamma)
            weight = {"v": clipped / (snr + 1), "eps": clipped / snr, "x0": clipped}[objective]
        posterior_variance = betas * (1 - alpha_bar_prev) / (1 - alpha_bar)

        tables = {
            "betas": betas,
            "alphas_cumprod": alpha_bar,
            "sqrt_alphas_cumprod": alpha_bar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - alpha_bar).sqrt(),
            "sqrt_recip_alphas_cumprod": (1 / alpha_bar).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1 / alpha_bar - 1).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * alpha_bar_prev.sqrt() / (1 - alpha_bar),
            "posterior_mean_coef2": (1 - alpha_bar_prev) * alphas.sqrt() / (1 - alpha_bar),
            "loss_weight": weight,
        }
        for name, value in tables.items():
            self.register_buffer(name, value.float(), persistent=False)

    # ------------------------------------------------------------------------------------ parameterisation
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise."""
        return (_gather(self.sqrt_alphas_cumprod, t, x0.ndim) * x0
                + _gather(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise)

    def target(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """What the network should predict for (x0, t, noise) under the objective."""
        if self.objective == "v":
            return (_gather(self.sqrt_alphas_cumprod, t, x0.ndim) * noise
                    - _gather(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0)
        return noise if self.objective == "eps" else x0

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """eps = (x_t / sqrt(a_t) - x0) / sqrt(1 / a_t - 1)."""
        return ((_gather(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t - x0)
                / _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim))

    def predict_x0_eps(self, x_t: Tensor, t: Tensor, prediction: Tensor,
                       clamp: tuple[float, float] | None = None) -> tuple[Tensor, Tensor]:
        """(x0, eps) from a network prediction; with ``clamp``, x0 is clamped and eps recomputed from it."""
        if self.objective == "v":
            x0 = (_gather(self.sqrt_alphas_cumprod, t, x_t.ndim) * x_t
                  - _gather(self.sqrt_one_minus_alphas_cumprod, t, x_t.ndim) * prediction)
        elif self.objective == "eps":
            x0 = (_gather(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
                  - _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * prediction)
        else:
            x0 = prediction
        if clamp is not None:
            x0 = x0.clamp(*clamp)
        elif self.objective == "eps":
            return x0, prediction
        return x0, self.eps_from_x0(x_t, t, x0)

    # ---------------------------------------------------------------------------------------------- loss
    def loss(self, model_fn: ModelFn, x0: Tensor, *, t: Tensor | None = None, noise: Tensor | None = None,
             reduction: str = "mean", generator: torch.Generator | None = None) -> Tensor:
        """Weighted denoising loss: weight[t_b] * mean over the code of |model_fn(x_t, t) - target|.

        Args:
            model_fn: the network (with its conditions bound), (x_t, t) -> prediction.
            x0: clean codes (B, ...).
            t: timesteps (B,) long; drawn uniformly from [0, T) when None.
            noise: eps like x0; drawn from N(0, 1) when None.
            reduction: 'mean' (a scalar, the mean over samples) or 'none' (one value per sample, (B,)).
            generator: for the draws of t and noise.
        """
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        batch = x0.shape[0]
        if t is None:
            t = torch.randint(0, self.num_timesteps, (batch,), device=x0.device, generator=generator)
        elif t.shape != (batch,):
            raise ValueError(f"t must have shape ({batch},), got {tuple(t.shape)}")
        if noise is None:
            noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
        prediction = model_fn(self.q_sample(x0, t, noise), t)
        target = self.target(x0, t, noise)
        error = (prediction - target).abs() if self.loss_type == "l1" else (prediction - target) ** 2
        per_sample = error.flatten(1).mean(dim=1) * self.loss_weight[t]   # (B,)
        return per_sample.mean() if reduction == "mean" else per_sample

    # ------------------------------------------------------------------------------------------ sampling
    def _initial(self, shape, noise, generator) -> Tensor:
        if noise is None:
            return torch.randn(tuple(shape), device=self.betas.device, generator=generator)
        if tuple(noise.shape) != tuple(shape):
            raise ValueError(f"initial noise must have shape {tuple(shape)}, got {tuple(noise.shape)}")
        return noise.to(self.betas.device)

    @staticmethod
    def _check_clamp(clamp):
        if clamp is not None and (len(clamp) != 2 or not clamp[0] < clamp[1]):
            raise ValueError(f"clamp must be None or (low, high) with low < high, got {clamp!r}")

    @torch.no_grad()
    def ddim_sample(self, model_fn: ModelFn, shape, *, steps: int = 50, eta: float = 0.0,
                    clamp: tuple[float, float] | None = (-1.0, 1.0), noise: Tensor | None = None,
                    generator: torch.Generator | None = None, progress: bool = False,
                    callback: StepCallback | None = None) -> Tensor:
        """DDIM sampling on the official time grid (``ddim_times``); returns x0 (shape).

        Args:
            model_fn: (x_t, t) -> prediction, guidance included.
            shape: (B, ...) of the codes.
            steps: number of network evaluations, 1..T.
            eta: 0 is deterministic DDIM; 1 matches the ancestral posterior variance.
            clamp: (low, high) for the predicted x0, or None.
            noise: the initial x_T; drawn from N(0, 1) when None.
            generator: for the initial noise and for the eta > 0 noise.
            progress: show a tqdm bar.
            callback: called after each step k = 1..steps as callback(k, t_next, x); the last step passes x0.
        """
        if not isinstance(steps, int) or not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"steps must be an integer in [1, {self.num_timesteps}], got {steps!r}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self._check_clamp(clamp)
        x = self._initial(shape, noise, generator)
        times = ddim_times(self.num_timesteps, steps).tolist()
        pairs = list(zip(times[:-1], times[1:], strict=True))
        for k, (now, nxt) in enumerate(tqdm(pairs, desc="DDIM", disable=not progress), start=1):
            t = torch.full((x.shape[0],), now, device=x.device, dtype=torch.long)
            x0, eps = self.predict_x0_eps(x, t, model_fn(x, t), clamp)
            if nxt < 0:
                x = x0
            else:
                a, a_next = self.alphas_cumprod[now], self.alphas_cumprod[nxt]
                sigma = eta * ((1 - a / a_next) * (1 - a_next) / (1 - a)).sqrt()
                # with eta = 1 the two terms cancel exactly; float32 rounding can leave a tiny negative
                x = x0 * a_next.sqrt() + (1 - a_next - sigma ** 2).clamp(min=0).sqrt() * eps
                if eta > 0:
                    x = x + sigma * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
            if callback is not None:
                callback(k, nxt, x)
        return x

    @torch.no_grad()
    def ancestral_sample(self, model_fn: ModelFn, shape, *, clamp: tuple[float, float] | None = (-1.0, 1.0),
                         noise: Tensor | None = None, generator: torch.Generator | None = None,
                         progress: bool = False, callback: StepCallback | None = None) -> Tensor:
        """Ancestral (DDPM) sampling through all T steps with the posterior q(x_{t-1} | x_t, x0).

        Arguments as ``ddim_sample``; callback(k, t - 1, x) after each step k = 1..T.
        """
        self._check_clamp(clamp)
        x = self._initial(shape, noise, generator)
        steps = range(self.num_timesteps - 1, -1, -1)
        for k, now in enumerate(tqdm(steps, desc="DDPM", disable=not progress), start=1):
            t = torch.full((x.shape[0],), now, device=x.device, dtype=torch.long)
            x0, _ = self.predict_x0_eps(x, t, model_fn(x, t), clamp)
            mean = (_gather(self.posterior_mean_coef1, t, x.ndim) * x0
                    + _gather(self.posterior_mean_coef2, t, x.ndim) * x)
            if now > 0:
                std = (0.5 * self.posterior_log_variance_clipped[now]).exp()
                x = mean + std * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
            else:
                x = mean
            if callback is not None:
                callback(k, now - 1, x)
        return x
