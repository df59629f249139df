"""GaussianDiffusion: schedule, loss and DDIM parity with the official code (fixtures); analytic checks."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from helpers import assert_close, reference_fixture
from scd.official import denoiser_from_official
from scd.diffusion import GaussianDiffusion, ddim_times


@pytest.fixture(scope="module")
def ref():
    """(depth-1 fixture denoiser, io tensors)."""
    root = reference_fixture("scd_reference")
    io = load_file(str(root / "io.safetensors"))
    state = load_file(str(root / "scd_state.safetensors"))
    model = denoiser_from_official(state, null_text=io["null_text_feats"])
    return model.eval(), io


# ------------------------------------------------------------------------------------------ fixture parity
def test_schedule_and_time_grid_match_reference(ref):
    _, io = ref
    diffusion = GaussianDiffusion()
    for name in ("betas", "alphas_cumprod", "loss_weight"):
        assert_close(getattr(diffusion, name), io[name], atol=1e-7, rel=1e-7, name=name)
        assert getattr(diffusion, name).dtype == torch.float32
    assert torch.equal(ddim_times(1000, 50), io["times"])


def test_loss_matches_reference(ref):
    model, io = ref
    diffusion = GaussianDiffusion()

    def model_fn(x, t):
        return model(x, t, io["text_feats"], io["exp"])

    with torch.no_grad():
        loss = diffusion.loss(model_fn, io["x0"], t=io["t_loss"], noise=io["noise"])
        per_sample = diffusion.loss(model_fn, io["x0"], t=io["t_loss"], noise=io["noise"], reduction="none")
    assert loss.shape == ()
    assert_close(loss, io["loss"], atol=1e-6, rel=2e-6, name="loss")
    assert_close(per_sample, io["loss_per_sample"], atol=1e-6, rel=2e-6, name="loss_per_sample")


def test_guided_ddim_matches_reference(ref):
    model, io = ref
    diffusion = GaussianDiffusion()
    steps = {}

    def model_fn(x, t):
        return model.guided(x, t, io["text_feats"], io["exp"], cond_scale=7.0)

    def record(k, t_next, x):
        steps[k] = (t_next, x.clone())

    x = diffusion.ddim_sample(model_fn, io["init_noise"].shape, steps=50, noise=io["init_noise"],
                              callback=record)
    assert [steps[k][0] for k in range(1, 51)] == io["times"][1:].tolist()
    for k in (1, 10, 25):
        assert_close(steps[k][1], io[f"x_step{k}"], atol=3e-5, rel=5e-6, name=f"x_step{k}")
    assert_close(x, io["x_sample"], atol=5e-5, rel=5e-6, name="x_sample")
    assert torch.equal(steps[50][1], x)


# ------------------------------------------------------------------------------------------ analytic checks
def oracle(diffusion: GaussianDiffusion, x0: torch.Tensor):
    """The perfect network for a data distribution concentrated on x0, in the diffusion's parameterisation."""
    def model_fn(x_t, t):
        a = diffusion.alphas_cumprod.double()[t].reshape(-1, 1, 1)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        v = a.sqrt() * eps - (1 - a).sqrt() * x0
        return {"v": v, "eps": eps, "x0": x0.expand_as(x_t)}[diffusion.objective]
    return model_fn


@pytest.mark.parametrize("objective", ["v", "eps", "x0"])
def test_samplers_recover_the_oracle_target(objective):
    diffusion = GaussianDiffusion(timesteps=100, objective=objective).double()
    x0 = torch.linspace(-0.9, 0.9, 12, dtype=torch.float64).reshape(1, 3, 4)
    shape = (2, 3, 4)
    noise = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tol = dict(atol=1e-6, rel=1e-6)
    for clamp in ((-1.0, 1.0), None):
        for eta in (0.0, 1.0):
            x = diffusion.ddim_sample(oracle(diffusion, x0), shape, steps=10, eta=eta, clamp=clamp,
                                      noise=noise, generator=torch.Generator().manual_seed(1))
            assert_close(x, x0.expand(shape), **tol, name=f"ddim eta {eta} clamp {clamp}")
        x = diffusion.ancestral_sample(oracle(diffusion, x0), shape, clamp=clamp, noise=noise,
                                       generator=torch.Generator().manual_seed(1))
        assert_close(x, x0.expand(shape), **tol, name=f"ancestral clamp {clamp}")


def test_oracle_loss_is_zero_and_targets_are_consistent():
    diffusion = GaussianDiffusion(objective="v", loss_type="l2").double()
    x0 = torch.randn(3, 2, 5, dtype=torch.float64)
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 500, 999])
    x_t = diffusion.q_sample(x0, t, noise)
    v = diffusion.target(x0, t, noise)
    pred_x0, pred_eps = diffusion.predict_x0_eps(x_t, t, v)
    # The schedule is stored in float32; at t = 0, eps = (x_t / sqrt(a) - x0) / sqrt(1 / a - 1) amplifies that
    # rounding about 160 times.
    assert_close(pred_x0, x0, atol=1e-6, rel=1e-6, name="x0 from v")
    assert_close(pred_eps, noise, atol=1e-4, rel=1e-5, name="eps from v")
    assert diffusion.loss(lambda x, tt: diffusion.target(x0, tt, noise), x0, t=t, noise=noise).item() < 1e-20


@pytest.mark.parametrize("loss_type", ["l1", "l2"])
@pytest.mark.parametrize("weighting", ["alpha_bar", "none", "min_snr"])
def test_loss_definition_float64(loss_type, weighting):
    diffusion = GaussianDiffusion(loss_type=loss_type, loss_weight=weighting, min_snr_gamma=5.0)
    g = torch.Generator().manual_seed(0)
    x0, noise, pred = (torch.randn(4, 3, 2, generator=g) for _ in range(3))
    t = torch.tensor([0, 10, 400, 999])
    per_sample = diffusion.loss(lambda x, tt: pred, x0, t=t, noise=noise, reduction="none")

    # float64 reference, straight from the definitions
    s = 0.008
    f = [math.cos(((i / 1000) + s) / (1 + s) * math.pi / 2) ** 2 for i in range(1001)]
    betas = [min(max(1 - f[i + 1] / f[i], 0.0), 0.999) for i in range(1000)]
    a = [1.0]
    for b in betas:
        a.append(a[-1] * (1 - b))
    want = []
    for i, ti in enumerate(t.tolist()):
        ab = a[ti + 1]
        snr = ab / (1 - ab)
        weight = {"alpha_bar": ab, "none": 1.0, "min_snr": min(snr, 5.0) / (snr + 1)}[weighting]
        v = math.sqrt(ab) * noise[i].double() - math.sqrt(1 - ab) * x0[i].double()
        err = (pred[i].double() - v).abs() if loss_type == "l1" else (pred[i].double() - v) ** 2
        want.append(weight * err.mean().item())
    assert_close(per_sample, torch.tensor(want, dtype=torch.float64), atol=1e-6, rel=1e-6, name="per sample")
    mean = diffusion.loss(lambda x, tt: pred, x0, t=t, noise=noise)
    assert_close(mean, per_sample.mean(), atol=1e-7, rel=1e-7, name="mean")


def test_clamp_and_generator():
    diffusion = GaussianDiffusion(timesteps=50).double()
    x0 = torch.full((1, 2, 3), 2.0, dtype=torch.float64)
    shape = (1, 2, 3)
    clamped = diffusion.ddim_sample(oracle(diffusion, x0), shape, steps=5,
                                    generator=torch.Generator().manual_seed(0))
    assert torch.all(clamped == 1.0)
    free = diffusion.ddim_sample(oracle(diffusion, x0), shape, steps=5, clamp=None,
                                 generator=torch.Generator().manual_seed(0))
    assert_close(free, x0, atol=1e-6, rel=1e-6, name="no clamp")

    def draw(seed, eta=1.0):
        return diffusion.ddim_sample(lambda x, t: torch.zeros_like(x), (2, 2, 3), steps=5, eta=eta,
                                     generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))
    drawn_t = diffusion.loss(lambda x, t: torch.zeros_like(x), torch.zeros(64, 2, 3, dtype=torch.float64),
                             reduction="none", generator=torch.Generator().manual_seed(0))
    assert drawn_t.shape == (64,)


def test_time_grid_and_bad_arguments():
    assert ddim_times(1000, 50)[:3].tolist() == [999, 979, 959]
    assert ddim_times(10, 10).tolist() == list(range(9, -2, -1))
    diffusion = GaussianDiffusion(timesteps=10)
    fn = lambda x, t: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match="steps"):
        diffusion.ddim_sample(fn, (1, 2), steps=11)
    with pytest.raises(ValueError, match="initial noise"):
        diffusion.ddim_sample(fn, (1, 2), noise=torch.zeros(2, 2), steps=2)
    with pytest.raises(ValueError, match="clamp"):
        diffusion.ddim_sample(fn, (1, 2), clamp=(1.0, -1.0), steps=2)
    with pytest.raises(ValueError, match="reduction"):
        diffusion.loss(fn, torch.zeros(1, 2), reduction="sum")
    for kwargs in (dict(objective="pred_v"), dict(schedule="sigmoid"), dict(loss_type="huber"),
                   dict(loss_weight="snr"), dict(timesteps=0)):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            GaussianDiffusion(**kwargs)


def test_ddim_with_eta_one_stays_finite():
    # eta = 1 makes the deterministic term's variance 1 - a_next - sigma^2 = 0 up to float32 rounding.
    diffusion = GaussianDiffusion()
    x0 = torch.rand(3, 14, 8) * 2 - 1
    oracle = lambda x, t: diffusion.target(x0, t, torch.zeros_like(x0))  # noqa: E731  any finite v works
    out = diffusion.ddim_sample(oracle, x0.shape, steps=2, eta=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all()
