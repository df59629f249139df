"""SCD checkpoint directories: round trip, EMA choice, atomic writes, readable errors."""
from __future__ import annotations

import json

import pytest
import torch

import texface.checkpoint
from scd.checkpoint import save_scd
from scd.pipeline import SCDPipeline
from scd.sampling import DEFAULT_SAMPLING
from texface.errors import CheckpointError
from scd.denoiser import StyleCodeDenoiser
from scd.diffusion import GaussianDiffusion
from scd.text import TextEncoder


def load(path, **kwargs) -> SCDPipeline:
    """The checkpoint at ``path`` as a pipeline without a generator (denoiser, diffusion, text encoder, config)."""
    return SCDPipeline.from_pretrained(path, generator=None, device="cpu", **kwargs)


TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2}
DIFFUSION = {"timesteps": 100, "loss_type": "l2"}


@pytest.fixture(scope="module")
def parts():
    text_encoder = TextEncoder.from_config(TEXT, seed=0)
    torch.manual_seed(0)
    denoiser = StyleCodeDenoiser(code_dim=8, n_tokens=3, dim=16, depth=2, heads=2, ff_dim=32, text_dim=64,
                                 exp_dim=5)
    ema = StyleCodeDenoiser(**denoiser.config)
    for model in (denoiser, ema):
        model.set_null_text(text_encoder.null_features())
    return denoiser, ema, text_encoder


def inputs():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 3, 8, generator=g), torch.tensor([3, 70]), torch.randn(2, 77, 64, generator=g),
            torch.randn(2, 5, generator=g))


def test_round_trip(tmp_path, parts):
    denoiser, ema, text_encoder = parts
    path = tmp_path / "ckpt"
    save_scd(path, denoiser=denoiser, ema_denoiser=ema, diffusion_config=DIFFUSION, text_encoder=text_encoder,
             sampling={"cond_scale": 5.0}, extra={"global_step": 12})
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "ema.safetensors", "model.safetensors",
                                                      "text_encoder.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["denoiser"] == denoiser.config and config["has_ema"] is True
    assert config["text_encoder"] == {"kind": "clip_hf", "config": text_encoder.config}
    assert config["sampling"] == {**DEFAULT_SAMPLING, "cond_scale": 5.0}
    assert config["extra"] == {"global_step": 12}

    for use_ema, source in ((True, ema), (False, denoiser)):
        bundle = load(path, use_ema=use_ema)
        assert not bundle.denoiser.training and bundle.denoiser.null_text_set
        for key, value in source.state_dict().items():
            assert torch.equal(bundle.denoiser.state_dict()[key], value), key
        x, t, text, exp = inputs()
        with torch.no_grad():
            assert torch.equal(bundle.denoiser.guided(x, t, text, exp), source.eval().guided(x, t, text, exp))
    assert bundle.diffusion.config == {**bundle.diffusion.config, **DIFFUSION}
    assert bundle.diffusion.num_timesteps == 100 and bundle.diffusion.loss_type == "l2"
    assert torch.equal(bundle.text_encoder.encode(["a face"]), text_encoder.encode(["a face"]))


def test_without_ema_and_text_encoder(tmp_path, parts):
    denoiser, _, _ = parts
    save_scd(tmp_path / "c", denoiser=denoiser, diffusion_config={})
    bundle = load(tmp_path / "c")   # use_ema=True falls back to the raw weights
    assert bundle.text_encoder is None and bundle.config["has_ema"] is False
    assert torch.equal(bundle.denoiser.null_text, denoiser.null_text)
    assert bundle.diffusion.config == GaussianDiffusion().config


def test_writes_are_atomic(tmp_path, parts, monkeypatch):
    denoiser, ema, text_encoder = parts
    path = tmp_path / "ckpt"
    real_save = texface.checkpoint.save_file
    calls = []

    def failing_save(state, filename):
        calls.append(filename)
        if len(calls) == 2:
            raise OSError("disk full")
        real_save(state, filename)

    monkeypatch.setattr(texface.checkpoint, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_scd(path, denoiser=denoiser, ema_denoiser=ema, diffusion_config={}, text_encoder=text_encoder)
    assert list(tmp_path.iterdir()) == []

    # A failed overwrite leaves the previous checkpoint intact.
    monkeypatch.setattr(texface.checkpoint, "save_file", real_save)
    save_scd(path, denoiser=denoiser, diffusion_config={})
    monkeypatch.setattr(texface.checkpoint, "save_file", failing_save)
    calls.clear()
    with pytest.raises(OSError):
        save_scd(path, denoiser=denoiser, ema_denoiser=ema, diffusion_config={})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert load(path).config["has_ema"] is False


def test_save_refuses_bad_input(tmp_path, parts):
    denoiser, _, text_encoder = parts
    path = tmp_path / "c"
    unset = StyleCodeDenoiser(**denoiser.config)
    with pytest.raises(ValueError, match="null text"):
        save_scd(path, denoiser=unset, diffusion_config={})
    other = StyleCodeDenoiser(**{**denoiser.config, "depth": 1})
    other.set_null_text(denoiser.null_text)
    with pytest.raises(ValueError, match="ema_denoiser config"):
        save_scd(path, denoiser=denoiser, ema_denoiser=other, diffusion_config={})
    with pytest.raises(ValueError, match="objective"):
        save_scd(path, denoiser=denoiser, diffusion_config={"objective": "score"})
    with pytest.raises(ValueError, match="JSON"):
        save_scd(path, denoiser=denoiser, diffusion_config={}, extra={"tensor": torch.zeros(1)})
    with pytest.raises(ValueError, match="sampling keys"):
        save_scd(path, denoiser=denoiser, diffusion_config={}, sampling={"cfg": 3})
    narrow = StyleCodeDenoiser(**{**denoiser.config, "text_dim": 32})
    narrow.set_null_text(torch.zeros(77, 32))
    with pytest.raises(ValueError, match="text encoder output"):
        save_scd(path, denoiser=narrow, diffusion_config={}, text_encoder=text_encoder)
    assert not path.exists()


def test_load_errors_are_readable(tmp_path, parts):
    denoiser, _, _ = parts
    with pytest.raises(CheckpointError, match="not found"):
        load(tmp_path / "missing")
    path = tmp_path / "c"
    save_scd(path, denoiser=denoiser, diffusion_config={})
    config = json.loads((path / "config.json").read_text())

    def rewrite(**changes):
        (path / "config.json").write_text(json.dumps({**config, **changes}))

    rewrite(format="texface-eg3d")
    with pytest.raises(CheckpointError, match="not an SCD checkpoint"):
        load(path)
    rewrite(version=99)
    with pytest.raises(CheckpointError, match="version"):
        load(path)
    rewrite(denoiser={**config["denoiser"], "depth": 3})
    with pytest.raises(CheckpointError, match=r"(?i)does not fit.*missing key"):
        load(path)
    rewrite(denoiser={**config["denoiser"], "width": 3})
    with pytest.raises(CheckpointError, match="invalid model settings"):
        load(path)
    rewrite(has_ema=True)
    with pytest.raises(CheckpointError, match="no ema.safetensors"):
        load(path)
    assert load(path, use_ema=False).config["has_ema"] is True
    rewrite(text_encoder={"kind": "open_clip", "config": {}})
    with pytest.raises(CheckpointError, match="text encoder"):
        load(path)
