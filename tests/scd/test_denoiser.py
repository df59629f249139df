"""StyleCodeDenoiser: parity with the official denoiser (fixtures), guidance algebra, condition masks."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from helpers import assert_close, reference_fixture
from scd.official import UNUSED, denoiser_from_official
from scd.denoiser import StyleCodeDenoiser

V_TOL = dict(atol=5e-5, rel=2e-5)


@pytest.fixture(scope="module")
def ref():
    """(depth-1 denoiser with the fixture weights, mapped by the converter; the io tensors)."""
    root = reference_fixture("scd_reference")
    io = load_file(str(root / "io.safetensors"))
    state = load_file(str(root / "scd_state.safetensors"))
    return denoiser_from_official(state, null_text=io["null_text_feats"]).eval(), io, state


def tiny(**kwargs) -> StyleCodeDenoiser:
    """A small float64 denoiser with d != text width, random null text; deterministic weights."""
    torch.manual_seed(0)
    cfg = dict(code_dim=12, n_tokens=5, dim=16, depth=2, heads=2, ff_dim=24, text_dim=10, text_len=7,
               exp_dim=3)
    model = StyleCodeDenoiser(**{**cfg, **kwargs}).double()
    with torch.no_grad():  # non-trivial biases everywhere, so that no branch is accidentally zero
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.set_null_text(torch.randn(model.text_len, model.text_dim, dtype=torch.float64))
    return model.eval()


def tiny_inputs(model: StyleCodeDenoiser, batch: int = 3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, model.n_tokens, model.code_dim, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (batch,), generator=g)
    text = torch.randn(batch, model.text_len, model.text_dim, generator=g, dtype=torch.float64)
    exp = torch.randn(batch, model.exp_dim, generator=g, dtype=torch.float64)
    return x, t, text, exp


# --------------------------------------------------------------------------------------------- fixture parity
def test_converted_fixture_state_builds_the_reference_model(ref):
    model, io, state = ref
    assert model.config == dict(code_dim=512, n_tokens=14, dim=512, depth=1, heads=8, ff_dim=2048,
                                dropout=0.1, text_dim=512, text_len=77, exp_dim=50)
    dropped = {k for k in state if any(p.fullmatch(k) for p in UNUSED)}
    assert dropped == {"null_cond_txt", "rotary.freqs", "seqTransDecoder.stack.0.rotary.freqs",
                       "seqTransDecoder.stack.0.layer_selection.0.weight",
                       "seqTransDecoder.stack.0.layer_selection.0.bias"}
    ours = model.state_dict()
    assert set(ours) == (set(state) - dropped) | {"null_text"}
    for key in set(state) - dropped:
        assert torch.equal(ours[key], state[key]), key


def test_condition_branches_match_reference(ref):
    model, io, _ = ref
    x, t, text, exp = io["x_t"], io["t"], io["text_feats"], io["exp"]
    keep, drop = torch.ones(len(t), dtype=torch.bool), torch.zeros(len(t), dtype=torch.bool)
    with torch.no_grad():
        assert_close(model(x, t, text, exp), io["v_cond"], **V_TOL, name="v_cond")
        assert_close(model(x, t, None, None), io["v_uncond"], **V_TOL, name="v_uncond")
        assert_close(model(x, t, text, exp, text_keep=drop, exp_keep=drop), io["v_uncond"], **V_TOL,
                     name="v_uncond (masks)")
        assert_close(model(x, t, text, exp, text_keep=keep, exp_keep=drop), io["v_text_only"], **V_TOL,
                     name="v_text_only (mask)")
        assert_close(model(x, t, text, None), io["v_text_only"], **V_TOL, name="v_text_only")
        assert_close(model(x, t, None, exp), io["v_exp_only"], **V_TOL, name="v_exp_only")


def test_joint_guidance_matches_reference(ref):
    model, io, _ = ref
    with torch.no_grad():
        v = model.guided(io["x_t"], io["t"], io["text_feats"], io["exp"], cond_scale=7.0)
        assert_close(v, io["v_cfg"], atol=3e-4, rel=2e-5, name="v_cfg")
        # The default scale is the official 7.
        assert torch.equal(model.guided(io["x_t"], io["t"], io["text_feats"], io["exp"]), v)


# ------------------------------------------------------------------------------------------- guidance algebra
def branches(model, x, t, text, exp):
    """u, v_text, v_exp, v_cond evaluated one by one (float64)."""
    with torch.no_grad():
        return (model(x, t, None, None), model(x, t, text, None), model(x, t, None, exp),
                model(x, t, text, exp))


def test_guidance_formulas_float64():
    model = tiny()
    x, t, text, exp = tiny_inputs(model)
    u, vt, ve, vc = branches(model, x, t, text, exp)
    tol = dict(atol=1e-10, rel=1e-12)
    with torch.no_grad():
        for s in (7.0, 2.5, 1.0):
            assert_close(model.guided(x, t, text, exp, cond_scale=s), u + s * (vc - u), **tol, name=f"joint {s}")
            # Equal separate scales are the joint guidance.
            separate = model.guided(x, t, text, exp, cond_scale=0.3, text_scale=s, exp_scale=s)
            assert_close(separate, u + s * (vc - u), **tol, name=f"separate == joint at {s}")
        # Joint up to the smaller scale, single-condition guidance for the excess.
        for st, se in ((7.0, 3.0), (2.0, 5.0), (-1.0, 2.0)):
            m = min(st, se)
            want = u + m * (vc - u) + (st - m) * (vt - u) + (se - m) * (ve - u)
            assert_close(model.guided(x, t, text, exp, text_scale=st, exp_scale=se), want, **tol,
                         name=f"separate {st}, {se}")
        assert_close(model.guided(x, t, text, exp, text_scale=4.0, exp_scale=0.0), u + 4 * (vt - u), **tol,
                     name="text guidance only")
        assert_close(model.guided(x, t, text, exp, text_scale=0.0, exp_scale=4.0), u + 4 * (ve - u), **tol,
                     name="expression guidance only")
        # A missing scale defaults to `scale`.
        assert_close(model.guided(x, t, text, exp, cond_scale=3.0, text_scale=5.0),
                     model.guided(x, t, text, exp, text_scale=5.0, exp_scale=3.0), **tol,
                     name="default scale")
        # Missing conditions.
        assert_close(model.guided(x, t, text, None, cond_scale=6.0), u + 6 * (vt - u), **tol, name="text only")
        assert_close(model.guided(x, t, text, None, text_scale=2.0, exp_scale=9.0), u + 2 * (vt - u), **tol,
                     name="text only, separate")
        assert_close(model.guided(x, t, None, exp, cond_scale=6.0), u + 6 * (ve - u), **tol, name="exp only")
        assert_close(model.guided(x, t, None, None, cond_scale=6.0), u, **tol, name="unconditional")
        assert_close(model.guided(x, t, text, exp, cond_scale=0.0), u, **tol, name="scale 0")


@pytest.mark.parametrize("kwargs, n_branches", [
    (dict(cond_scale=7.0), 2), (dict(cond_scale=0.0), 1), (dict(text_scale=5.0, exp_scale=2.0), 3),
    (dict(text_scale=3.0, exp_scale=3.0), 2), (dict(text_scale=3.0, exp_scale=0.0), 2)])
def test_guidance_runs_one_batched_forward(kwargs, n_branches):
    model = tiny()
    x, t, text, exp = tiny_inputs(model, batch=2)
    batches = []
    model.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    with torch.no_grad():
        model.guided(x, t, text, exp, **kwargs)
    assert batches == [2 * n_branches]


# ------------------------------------------------------------------------------------------ masks and dropout
def test_keep_masks_select_null_conditions_per_sample():
    model = tiny()
    x, t, text, exp = tiny_inputs(model, batch=4)
    text_keep = torch.tensor([True, False, True, False])
    exp_keep = torch.tensor([True, True, False, False])
    with torch.no_grad():
        mixed = model(x, t, text, exp, text_keep=text_keep, exp_keep=exp_keep)
        for i in range(4):
            one = model(x[i:i + 1], t[i:i + 1], text[i:i + 1] if text_keep[i] else None,
                        exp[i:i + 1] if exp_keep[i] else None)
            assert_close(mixed[i:i + 1], one, atol=1e-12, rel=1e-12, name=f"sample {i}")
        everything = model(x, t, text, exp, text_keep=torch.ones(4, dtype=torch.bool),
                           exp_keep=torch.ones(4, dtype=torch.bool))
        assert torch.equal(everything, model(x, t, text, exp))
        # The conditions matter at all (otherwise the checks above prove nothing).
        assert (model(x, t, None, exp) - model(x, t, text, exp)).abs().max() > 1e-3
        assert (model(x, t, text, None) - model(x, t, text, exp)).abs().max() > 1e-3


def test_dropout_only_in_training_mode():
    model = tiny(dropout=0.5)
    x, t, text, exp = tiny_inputs(model)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x, t, text, exp), model(x, t, text, exp))
        model.train()
        assert not torch.equal(model(x, t, text, exp), model(x, t, text, exp))
    assert StyleCodeDenoiser(dim=16, depth=1, heads=2, ff_dim=8, text_dim=16).config["dropout"] == 0.1


def test_gradients_reach_every_parameter():
    model = tiny().train()
    x, t, text, exp = tiny_inputs(model)
    keep = torch.tensor([True, False, True])
    model(x, t, text, exp, text_keep=keep, exp_keep=~keep).square().mean().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert unused == []


# -------------------------------------------------------------------------------------------------- null text
def test_null_text_must_be_set_before_use():
    model = StyleCodeDenoiser(dim=16, depth=1, heads=2, ff_dim=8, text_dim=6, text_len=4, code_dim=8,
                              n_tokens=3)
    x, t = torch.randn(2, 3, 8), torch.tensor([0, 5])
    text = torch.randn(2, 4, 6)
    model(x, t, text, None)  # the null text is not needed here
    with pytest.raises(RuntimeError, match="set_null_text"):
        model(x, t, None, None)
    with pytest.raises(ValueError, match=r"shape \(4, 6\)"):
        model.set_null_text(torch.zeros(77, 6))
    with pytest.raises(ValueError, match="NaN"):
        model.set_null_text(torch.full((4, 6), float("nan")))
    loaded = StyleCodeDenoiser(**model.config)
    model.set_null_text(torch.randn(4, 6))
    loaded.load_state_dict(model.state_dict())
    assert loaded.null_text_set and torch.equal(loaded.null_text, model.null_text)
    loaded(x, t, None, None)


def test_bad_inputs_and_settings_are_reported():
    model = tiny()
    x, t, text, exp = tiny_inputs(model, batch=2)
    with pytest.raises(ValueError, match="x must have shape"):
        model(x[:, :2], t, text, exp)
    with pytest.raises(ValueError, match="t must be an integer"):
        model(x, t.double(), text, exp)
    with pytest.raises(ValueError, match="text features must have shape"):
        model(x, t, text[:, :3], exp)
    with pytest.raises(ValueError, match="exp must have shape"):
        model(x, t, text, exp[:, :2])
    with pytest.raises(ValueError, match="text_keep must be a bool"):
        model(x, t, text, exp, text_keep=torch.ones(2))
    with pytest.raises(ValueError, match="heads"):
        StyleCodeDenoiser(dim=16, heads=3)
    with pytest.raises(ValueError, match="depth"):
        StyleCodeDenoiser(depth=0)
    with pytest.raises(ValueError, match="dropout"):
        StyleCodeDenoiser(dropout=1.0)
