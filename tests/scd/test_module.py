"""scd.module: the EMA, condition dropout and the training loss of SCDModule."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from scd.denoiser import StyleCodeDenoiser
from scd.module import EMA
from scd.text import TextEncoder
from scd_training import TINY_TEXT, batch_of, tiny_module


def test_ema_update_is_the_exponential_average():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EMA(net, decay=0.9, warmup=False)
    start = [p.detach().clone() for p in net.parameters()]
    expected = [p.double() for p in start]
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net[1].running_mean.add_(1.0)
        ema.update(net)
        expected = [0.9 * e + 0.1 * p.detach().double() for e, p in zip(expected, net.parameters())]
    for e, p in zip(expected, ema.model.parameters()):
        torch.testing.assert_close(p.double(), e, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ema.model[1].running_mean, net[1].running_mean)  # buffers are copied
    assert int(ema.num_updates) == 3
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_ema_warmup_and_mode():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    ema = EMA(net, decay=0.999, warmup=True)
    assert ema.current_decay() == pytest.approx(1 / 10)    # (1 + 0) / (10 + 0)
    ema.num_updates.fill_(90)
    assert ema.current_decay() == pytest.approx(91 / 100)
    ema.num_updates.fill_(10 ** 6)
    assert ema.current_decay() == 0.999
    parent = torch.nn.ModuleDict({"ema": ema}).train()
    assert not parent["ema"].model.training  # the average never runs dropout
    with pytest.raises(ValueError, match="decay"):
        EMA(net, decay=1.0)


@pytest.mark.parametrize(("text_p", "exp_p"), [(0.5, 0.5), (0.0, 1.0), (1.0, 0.25)])
def test_condition_dropout_masks_are_independent_with_the_configured_rates(monkeypatch, text_p, exp_p):
    module = tiny_module(text_drop_prob=text_p, exp_drop_prob=exp_p)
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    seen = {}

    def spy(x, t, text, exp, *, text_keep, exp_keep):
        seen["text"], seen["exp"] = text_keep, exp_keep
        return torch.zeros_like(x)  # only the masks matter here

    monkeypatch.setattr(module.denoiser, "forward", spy)
    torch.manual_seed(0)
    module.training_step(batch_of(2000), 0)
    text_keep, exp_keep = seen["text"].float(), seen["exp"].float()
    # Binomial standard deviations are <= 0.011 for 2000 draws: 0.04 is more than 3.5 of them.
    assert text_keep.mean().item() == pytest.approx(1 - text_p, abs=0.04)
    assert exp_keep.mean().item() == pytest.approx(1 - exp_p, abs=0.04)
    both = (text_keep * exp_keep).mean().item()
    assert both == pytest.approx((1 - text_p) * (1 - exp_p), abs=0.04)  # independent draws
    module.training_step(batch_of(64, has_exp=False), 0)
    assert not seen["exp"].any()  # a code without an expression never gets one


def test_training_loss_is_the_diffusion_loss_of_the_masked_denoiser(monkeypatch):
    module = tiny_module(text_drop_prob=1.0, exp_drop_prob=1.0)
    logged = {}
    monkeypatch.setattr(module, "log", lambda name, value, **k: logged.update({name: value}))
    batch = batch_of(8)
    torch.manual_seed(1)
    loss = module.training_step(batch, 0)
    # With both conditions always dropped, the loss is that of the unconditional denoiser with the same draws.
    torch.manual_seed(1)
    torch.rand(8), torch.rand(8)  # the two mask draws
    expected = module.diffusion.loss(lambda x, t: module.denoiser(x, t, None, None), batch["code"])
    torch.testing.assert_close(loss, expected)
    assert logged["train/loss"] is loss
    loss.backward()
    assert module.denoiser.input_projection.weight.grad is not None
    assert all(p.grad is None for p in module.text_encoder.parameters())


def test_module_checks_text_width_and_probabilities():
    text_encoder = TextEncoder.from_config(TINY_TEXT)
    with pytest.raises(ValueError, match="text_dim"):
        tiny_module(denoiser=StyleCodeDenoiser(dim=32, depth=1, heads=2, ff_dim=64, text_dim=24),
                    text_encoder=text_encoder)
    with pytest.raises(ValueError, match="exp_drop_prob"):
        tiny_module(exp_drop_prob=1.5)


def test_null_text_is_the_encoders_empty_caption_and_encoder_stays_frozen():
    module = tiny_module()
    torch.testing.assert_close(module.denoiser.null_text, module.text_encoder.null_features())
    torch.testing.assert_close(module.ema.model.null_text, module.text_encoder.null_features())
    module.train()
    assert not module.text_encoder.training and not module.ema.model.training
    # Only the denoiser trains: the text tower and the EMA copy are frozen.
    params = {id(p) for p in module.denoiser.parameters()}
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    assert trainable == params


def test_sampling_defaults_reach_validation_and_the_export(tmp_path, monkeypatch):
    import scd.pipeline

    with pytest.raises(ValueError, match="unknown sampling keys"):
        tiny_module(sampling={"temperature": 2})
    module = tiny_module(sampling={"clamp": False, "steps": 3})
    assert module.sampling == {"clamp": False, "steps": 3}
    seen = {}
    monkeypatch.setattr(scd.pipeline.SCDPipeline, "sample", lambda self, c, e, **kw: seen.update(kw))
    module.sample(["a man"], None, num_samples=1, steps=2)
    assert seen["clamp"] is False and seen["steps"] == 2           # a call's own value wins
    monkeypatch.undo()
    module.trainer = SimpleNamespace(current_epoch=0, global_step=0, datamodule=None)
    module.export(tmp_path / "export")
    pipe = scd.pipeline.SCDPipeline.from_pretrained(tmp_path / "export", generator=None, device="cpu")
    assert pipe.config["sampling"]["clamp"] is False and pipe.config["sampling"]["cond_scale"] == 7.0
