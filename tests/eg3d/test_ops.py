"""eg3d.ops against independent references: float64 loops written from the definitions, and analytic cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eg3d.ops import (bias_act, conv2d_resample, downsample2d, filter2d, modulated_conv2d, setup_filter, upfirdn2d,
                      upsample2d)


# ----------------------------------------------------------------------------------------------------------------
# Float64 references, written from the definitions with explicit loops (small sizes only).

def ref_upfirdn2d(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip_filter=False, gain=1.0):
    """Zero-insert, zero-pad/crop, true 2-D convolution (valid part), subsample. x: (B, C, H, W) ndarray.

    A 1-D filter is separable: it acts like its outer product."""
    upx, upy = up
    downx, downy = down
    x0, x1, y0, y1 = pad
    f = np.asarray(f, dtype=np.float64)
    if f.ndim == 1:
        f = np.outer(f, f)
    b, c, h, w = x.shape
    u = np.zeros((b, c, h * upy, w * upx))
    u[:, :, ::upy, ::upx] = x  # each pixel followed by up-1 zeros
    # Pixel (i, j) of the padded image is pixel (i - y0, j - x0) of u, zero outside (negative pads crop).
    ph, pw = h * upy + y0 + y1, w * upx + x0 + x1
    p = np.zeros((b, c, ph, pw))
    for i in range(ph):
        for j in range(pw):
            si, sj = i - y0, j - x0
            if 0 <= si < h * upy and 0 <= sj < w * upx:
                p[:, :, i, j] = u[:, :, si, sj]
    fh, fw = f.shape
    kern = f if flip_filter else f[::-1, ::-1]  # convolution == correlation with the flipped filter
    oh, ow = ph - fh + 1, pw - fw + 1
    out = np.zeros((b, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = (p[:, :, i:i + fh, j:j + fw] * kern).sum(axis=(2, 3))
    return out[:, :, ::downy, ::downx] * gain


def ref_conv(x, w, groups=1, flip_weight=True):
    """Valid grouped 2-D correlation (flip_weight=True) or convolution, by loops. x (B,I,H,W), w (O,I/g,kh,kw)."""
    if not flip_weight:
        w = w[:, :, ::-1, ::-1]
    b, ci, h, wd = x.shape
    co, cig, kh, kw = w.shape
    cog = co // groups
    out = np.zeros((b, co, h - kh + 1, wd - kw + 1))
    for o in range(co):
        g = o // cog
        xs = x[:, g * cig:(g + 1) * cig]
        for i in range(out.shape[2]):
            for j in range(out.shape[3]):
                out[:, o, i, j] = (xs[:, :, i:i + kh, j:j + kw] * w[o]).sum(axis=(1, 2, 3))
    return out


def t64(a):
    return torch.as_tensor(np.ascontiguousarray(a))


# ----------------------------------------------------------------------------------------------------------------
# setup_filter

def test_setup_filter_outer_product_normalized():
    f = setup_filter([1, 3, 3, 1])
    expected = torch.tensor([1., 3., 3., 1.])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f, torch.outer(expected, expected) / 64)


def test_setup_filter_separable_gain_flip():
    taps = torch.arange(1., 9.)  # 8 taps -> separable by default
    f = setup_filter(taps, gain=4)
    assert f.ndim == 1
    torch.testing.assert_close(f, taps / taps.sum() * 2)  # gain 4 spread over 2 axes
    g = setup_filter([[1., 2.], [3., 4.]], normalize=False, flip_filter=True)
    torch.testing.assert_close(g, torch.tensor([[4., 3.], [2., 1.]]))
    assert setup_filter(None).tolist() == [[1.0]]
    with pytest.raises(ValueError, match="separable"):
        setup_filter([[1., 2.], [3., 4.]], separable=True)


# ----------------------------------------------------------------------------------------------------------------
# upfirdn2d

UPFIRDN_CASES = [
    dict(up=(1, 1), down=(1, 1), pad=(1, 2, 0, 1)),
    dict(up=(2, 2), down=(1, 1), pad=(2, 1, 2, 1), gain=4.0),
    dict(up=(3, 2), down=(1, 1), pad=(1, 0, 2, 3)),
    dict(up=(1, 1), down=(2, 3), pad=(1, 1, 2, 0)),
    dict(up=(2, 2), down=(3, 2), pad=(0, 2, 1, 1)),
    dict(up=(2, 1), down=(1, 1), pad=(-1, 2, -2, 1)),  # negative padding crops
    dict(up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip_filter=True),
]


@pytest.mark.parametrize("case", UPFIRDN_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
@pytest.mark.parametrize("filt", ["asym2d", "sep8"])
def test_upfirdn2d_matches_definition(case, filt):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 10))
    if filt == "asym2d":
        f = rng.standard_normal((3, 4))  # asymmetric: catches convolution/correlation and axis mix-ups
        f_t = torch.tensor(f, dtype=torch.float32)
    else:
        f = rng.standard_normal(8)
        f_t = setup_filter(f, normalize=False)
        assert f_t.ndim == 1
    kwargs = dict(up=case["up"], down=case["down"], pad=case["pad"], flip_filter=case.get("flip_filter", False),
                  gain=case.get("gain", 1.0))
    expected = ref_upfirdn2d(x, f_t.double().numpy(), **kwargs)
    actual = upfirdn2d(t64(x), f_t, up=kwargs["up"], down=kwargs["down"], padding=list(kwargs["pad"]),
                       flip_filter=kwargs["flip_filter"], gain=kwargs["gain"])
    assert actual.dtype == torch.float64
    torch.testing.assert_close(actual, t64(expected), rtol=1e-10, atol=1e-10)


def test_resampling_helpers_preserve_constants_and_sizes():
    """[1,3,3,1] is normalised: a constant image stays constant away from the zero-padded border."""
    f = setup_filter([1, 3, 3, 1])
    x = torch.full((1, 2, 8, 8), 3.0, dtype=torch.float64)
    up = upsample2d(x, f)
    assert up.shape == (1, 2, 16, 16)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 3.0))
    down = downsample2d(x, f)
    assert down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 3.0))
    same = filter2d(x, f)
    assert same.shape == x.shape
    torch.testing.assert_close(same[..., 2:-2, 2:-2], x[..., 2:-2, 2:-2])


def test_upsample2d_of_impulse_is_the_scaled_filter():
    """Upsampling a single impulse by 2 reproduces the filter taps times up^2 (the zero-insertion gain)."""
    f = setup_filter([1, 3, 3, 1])
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 1, 1] = 1
    y = upsample2d(x, f)
    # Impulse at upsampled (2, 2); padding (2, 1) puts the 4x4 footprint at rows/cols 1..4.
    torch.testing.assert_close(y[0, 0, 1:5, 1:5], f.double() * 4)
    assert y.sum().item() == pytest.approx(4.0)


def test_upfirdn2d_rejects_bad_input():
    f = setup_filter([1, 3, 3, 1])
    with pytest.raises(ValueError, match="B, C, H, W"):
        upfirdn2d(torch.zeros(3, 4, 4), f)
    with pytest.raises(ValueError, match="smaller than"):
        upfirdn2d(torch.zeros(1, 1, 2, 2), f)
    with pytest.raises(ValueError, match="padding"):
        upfirdn2d(torch.zeros(1, 1, 8, 8), f, padding=[1, 2, 3])


# ----------------------------------------------------------------------------------------------------------------
# conv2d_resample

@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("flip_weight", [True, False])
@pytest.mark.parametrize("padding", [1, [0, 2, 1, 0], [-1, 1, 0, 2]])
@pytest.mark.parametrize("groups", [1, 2])
def test_conv2d_resample_matches_upfirdn_then_conv(up, flip_weight, padding, groups):
    """Defined as a valid conv of upfirdn2d(x, f, up, padding + the upsampling pad, gain=up^2)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 5, 6))
    w = rng.standard_normal((6, 4 // groups, 3, 3))
    f = setup_filter([1, 3, 3, 1])
    x0, x1, y0, y1 = [padding] * 4 if isinstance(padding, int) else padding
    if up > 1:
        x0, x1, y0, y1 = x0 + 2, x1 + 1, y0 + 2, y1 + 1  # (fw + up - 1) // 2 and (fw - up) // 2 for 4 taps
        z = ref_upfirdn2d(x, f.double().numpy(), up=(up, up), pad=(x0, x1, y0, y1), gain=up * up)
    else:
        z = ref_upfirdn2d(x, [[1.0]], pad=(x0, x1, y0, y1))
    expected = ref_conv(z, w, groups=groups, flip_weight=flip_weight)
    actual = conv2d_resample(t64(x), t64(w), f=f, up=up, padding=padding, groups=groups, flip_weight=flip_weight)
    torch.testing.assert_close(actual, t64(expected), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------------------------
# bias_act

@pytest.mark.parametrize("act,func,gain", [
    ("linear", lambda v: v, 1.0),
    ("relu", lambda v: np.maximum(v, 0), math.sqrt(2)),
    ("lrelu", lambda v: np.where(v >= 0, v, 0.2 * v), math.sqrt(2)),
    ("tanh", np.tanh, 1.0),
    ("sigmoid", lambda v: 1 / (1 + np.exp(-v)), 1.0),
    ("elu", lambda v: np.where(v > 0, v, np.expm1(v)), 1.0),
    ("selu", lambda v: 1.0507009873554805 * np.where(v > 0, v, 1.6732632423543772 * np.expm1(v)), 1.0),
    ("softplus", lambda v: np.log1p(np.exp(v)), 1.0),
    ("swish", lambda v: v / (1 + np.exp(-v)), math.sqrt(2)),
])
def test_bias_act_formulas_and_default_gains(act, func, gain):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 5)) * 2
    b = rng.standard_normal(4)
    expected = func(x + b[None, :, None]) * gain
    torch.testing.assert_close(bias_act(t64(x), t64(b), act=act), t64(expected), rtol=1e-12, atol=1e-12)


def test_bias_act_dim_alpha_gain_clamp():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5)) * 10
    b = rng.standard_normal(5)
    v = x + b
    expected = np.clip(np.where(v >= 0, v, 0.1 * v) * 3.0, -4.0, 4.0)
    out = bias_act(t64(x), t64(b), dim=2, act="lrelu", alpha=0.1, gain=3.0, clamp=4.0)
    torch.testing.assert_close(out, t64(expected), rtol=1e-12, atol=1e-12)
    assert out.abs().max().item() == 4.0  # the clamp binds in this case
    with pytest.raises(ValueError, match="unknown activation"):
        bias_act(t64(x), act="gelu")
    with pytest.raises(ValueError, match="does not match"):
        bias_act(t64(x), t64(b), dim=1)


# ----------------------------------------------------------------------------------------------------------------
# modulated_conv2d

def ref_modulated_conv(x, weight, styles, *, demodulate, up, padding, flip_weight, noise):
    """Per-sample loop: build sample n's kernel explicitly, demodulate it, then resample-and-convolve by loops."""
    outs = []
    f = setup_filter([1, 3, 3, 1]).double().numpy()
    for n in range(x.shape[0]):
        w = weight * styles[n][None, :, None, None]
        if demodulate:
            w = w / np.sqrt((w ** 2).sum(axis=(1, 2, 3), keepdims=True) + 1e-8)
        p = padding
        if up > 1:
            z = ref_upfirdn2d(x[n:n + 1], f, up=(2, 2), pad=(p + 2, p + 1, p + 2, p + 1), gain=4)
        else:
            z = ref_upfirdn2d(x[n:n + 1], [[1.0]], pad=(p, p, p, p))
        outs.append(ref_conv(z, w, flip_weight=flip_weight))
    out = np.concatenate(outs)
    return out if noise is None else out + noise


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("fused", [True, False])
def test_modulated_conv2d_matches_per_sample_reference(demodulate, up, fused):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 5, 5))
    weight = rng.standard_normal((4, 3, 3, 3))
    styles = rng.standard_normal((2, 3)) + 1
    out_res = 5 * up
    noise = rng.standard_normal((2, 1, out_res, out_res))
    flip_weight = up == 1
    expected = ref_modulated_conv(x, weight, styles, demodulate=demodulate, up=up, padding=1,
                                  flip_weight=flip_weight, noise=noise)
    actual = modulated_conv2d(t64(x), t64(weight), t64(styles), noise=t64(noise), up=up, padding=1,
                              resample_filter=setup_filter([1, 3, 3, 1]), demodulate=demodulate,
                              flip_weight=flip_weight, fused=fused)
    assert actual.shape == (2, 4, out_res, out_res)
    torch.testing.assert_close(actual, t64(expected), rtol=1e-10, atol=1e-10)


def test_demodulation_gives_unit_norm_kernels():
    """Analytic: demodulation scales each output channel's kernel to unit L2 norm (eps 1e-8 under the root), so a
    1x1 conv of a constant-one input with one input channel returns s*w / sqrt((s*w)^2 + 1e-8), ~sign(w)."""
    weight = torch.tensor([0.5, -1.5, 2.0, -0.8, 1.1], dtype=torch.float64).reshape(5, 1, 1, 1)
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    for scale in (0.1, 7.0):
        out = modulated_conv2d(x, weight, torch.full((1, 1), scale, dtype=torch.float64))
        sw = scale * weight.flatten()
        torch.testing.assert_close(out[0, :, 0, 0], sw / torch.sqrt(sw ** 2 + 1e-8), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out[0, :, 1, 1], torch.sign(sw), rtol=0, atol=1e-3)


def test_modulated_conv2d_float32_fused_equals_unfused():
    torch.manual_seed(0)
    x, weight, styles = torch.randn(3, 8, 6, 6), torch.randn(5, 8, 3, 3), torch.randn(3, 8)
    f = setup_filter([1, 3, 3, 1])
    for up in (1, 2):
        a = modulated_conv2d(x, weight, styles, up=up, padding=1, resample_filter=f, flip_weight=up == 1)
        b = modulated_conv2d(x, weight, styles, up=up, padding=1, resample_filter=f, flip_weight=up == 1, fused=False)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_modulated_conv2d_rejects_mismatched_styles():
    with pytest.raises(ValueError, match="styles"):
        modulated_conv2d(torch.zeros(2, 3, 4, 4), torch.zeros(4, 3, 3, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="input channels"):
        modulated_conv2d(torch.zeros(2, 2, 4, 4), torch.zeros(4, 3, 3, 3), torch.zeros(2, 3))


def test_fc_layer_routes_activation_through_bias_act():
    """FullyConnectedLayer: equalized-lr weight/bias gains, then bias_act with the activation's default gain."""
    from eg3d.layers import FullyConnectedLayer
    torch.manual_seed(0)
    layer = FullyConnectedLayer(6, 4, activation="lrelu", lr_multiplier=0.01, bias_init=0.5).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    w = layer.weight.detach() * 0.01 / math.sqrt(6)
    b = layer.bias.detach() * 0.01
    expected = F.leaky_relu(x @ w.T + b, 0.2) * math.sqrt(2)
    torch.testing.assert_close(layer(x), expected)
    with pytest.raises(ValueError, match="activation"):
        FullyConnectedLayer(2, 2, activation="gelu")
