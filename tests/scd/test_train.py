"""SCD training: EMA, schedule, condition dropout, datamodule, train(cfg) end to end, CLI, sweep, learning.

Fast tests compose the REAL configs (experiment=demo) and shrink them; the learning proof is marked slow.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from scd.denoiser import StyleCodeDenoiser
from scd.diffusion import GaussianDiffusion
from scd.module import EMA, SCDModule, warmup_cosine
from scd.text import TextEncoder

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"

# Shrinks experiment=demo to seconds: a few codes, one tiny layer, 2 optimizer steps, 2 DDIM steps.
TINY = [
    "data.train_size=32", "data.val_size=8", "data.batch_size=16",
    "model.denoiser.dim=32", "model.denoiser.depth=1", "model.denoiser.heads=2", "model.denoiser.ff_dim=64",
    "model.text_encoder.config.hidden_size=16", "model.text_encoder.config.intermediate_size=32",
    "model.text_encoder.config.num_hidden_layers=1",
    "model.scheduler.warmup_steps=1", "model.val_sampling.num_samples=8", "model.val_sampling.steps=2",
    "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1",
    "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
]
TINY_CALLBACKS = [
    "callbacks.sample_images.every_n_epochs=1", "callbacks.sample_images.steps=2",
    "callbacks.sample_images.prompts=[This man has a beard.,She has bangs.]",
]


TINY_TEXT = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}


def compose_demo(tmp_path: Path, *overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=["experiment=demo", f"paths.output_dir={tmp_path}", *TINY,
                                           *overrides])


def tiny_module(**kwargs) -> SCDModule:
    text_encoder = TextEncoder.from_config(TINY_TEXT, seed=0)
    denoiser = StyleCodeDenoiser(dim=32, depth=1, heads=2, ff_dim=64, dropout=0.0, text_dim=16)
    defaults = dict(denoiser=denoiser, diffusion=GaussianDiffusion(timesteps=100), text_encoder=text_encoder,
                    optimizer=partial(torch.optim.AdamW, lr=1e-3), ema=partial(EMA, decay=0.9))
    return SCDModule(**{**defaults, **kwargs})


# ---- EMA ---------------------------------------------------------------------------------------------------
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


# ---- learning-rate schedule --------------------------------------------------------------------------------
def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = warmup_cosine(opt, total_steps=110, warmup_steps=10, final_lr_ratio=0.1)
    lrs = []
    for _ in range(111):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2.0 * 1 / 10)
    assert lrs[9] == pytest.approx(2.0)
    assert lrs[10] == pytest.approx(2.0)                        # cosine starts at the peak
    assert lrs[60] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))     # half way: cos(pi/2) = 0
    assert lrs[110] == pytest.approx(2.0 * 0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    with pytest.raises(ValueError):
        warmup_cosine(opt, total_steps=10, final_lr_ratio=1.5)


# ---- the module --------------------------------------------------------------------------------------------
def batch_of(n: int, has_exp: bool = True) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"code": torch.rand(n, 14, 512, generator=g) * 2 - 1, "caption": ["a man with a beard"] * n,
            "exp": torch.randn(n, 50, generator=g), "has_exp": torch.full((n,), has_exp)}


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


# ---- the datamodule ----------------------------------------------------------------------------------------
def test_datamodule_on_the_synthetic_world():
    from scd.datamodule import StyleCodeDataModule
    from scd.synthetic import AttributeWorld

    dm = StyleCodeDataModule(world=AttributeWorld(seed=0), train_size=24, val_size=8, batch_size=10)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["code"].shape == (10, 14, 512) and batch["code"].dtype == torch.float32
    assert batch["exp"].shape == (10, 50) and batch["has_exp"].dtype == torch.bool
    assert len(batch["caption"]) == 10 and all(isinstance(c, str) for c in batch["caption"])
    val = next(iter(dm.val_dataloader()))
    torch.testing.assert_close(val["code"], dm.val_data.codes[:8])  # in order, the held-out sample
    assert val["caption"] == [c[0] if c else "" for c in dm.val_data.captions[:8]]
    # Train and validation codes are different draws of the same world.
    assert not torch.equal(dm.train_data.codes[:8], dm.val_data.codes)


def test_datamodule_on_a_dataset_directory(tmp_path):
    from scd.datamodule import StyleCodeDataModule
    from scd.synthetic import AttributeWorld

    AttributeWorld(seed=0).sample(20, seed=3).save(tmp_path / "codes")
    dm = StyleCodeDataModule(data_dir=tmp_path / "codes", val_fraction=0.25, batch_size=4)
    dm.setup("fit")
    assert len(dm.train_indices) == 15 and len(dm.val_indices) == 5
    assert not set(dm.train_indices) & set(dm.val_indices)
    assert sum(len(b["caption"]) for b in dm.train_dataloader()) == 15
    with pytest.raises(ValueError, match="exactly one source"):
        StyleCodeDataModule(data_dir=tmp_path, world=AttributeWorld(seed=0))
    with pytest.raises(FileNotFoundError, match="not found"):
        StyleCodeDataModule(data_dir=tmp_path / "missing")


# ---- train(cfg) end to end ---------------------------------------------------------------------------------
def test_train_demo_end_to_end_exports_renders_and_resumes(tmp_path):
    from scd.checkpoint import load_scd
    from scd.train import train

    run = tmp_path / "run"
    full_export = ["callbacks.export_scd.dtype=float32", "callbacks.export_scd.ema_only=false"]
    metrics = train(compose_demo(run, *TINY_CALLBACKS, *full_export))
    for name in ("train/loss", "val/loss", "val/attr_acc/mean", "val/exp_error", "val/fd"):
        assert name in metrics and math.isfinite(metrics[name]), name
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["step_0000002.png"]
    assert (run / "csv").is_dir()

    # The export is a complete SCD checkpoint: config, raw and EMA weights, text encoder, the world it saw.
    bundle = load_scd(run / "export")
    assert bundle.config["has_ema"] and bundle.text_encoder is not None
    assert bundle.config["extra"]["world"]["seed"] == 0 and bundle.config["extra"]["global_step"] == 2
    assert bundle.config["denoiser"]["dim"] == 32
    raw = load_scd(run / "export", use_ema=False).denoiser.state_dict()
    ema = bundle.denoiser.state_dict()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)  # EMA and raw weights are both there, and differ

    # The evaluation entry point reads the world from the export and writes the guidance table.
    from scd.evaluate import evaluate
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        eval_cfg = compose("evaluate", overrides=[f"ckpt={run / 'export'}", "num_samples=16", "steps=2",
                                                  "scales=[0,7]", f"out_dir={tmp_path / 'eval'}",
                                                  "device=cpu", "paths.output_dir=unused"])
    results = evaluate(eval_cfg)
    assert [row["scale"] for row in results["sweep"]] == [0.0, 7.0]
    assert results["true_codes"]["attr_acc/mean"] > 0.9  # true codes agree with their own captions
    assert "guidance scale 7" in (tmp_path / "eval" / "results.md").read_text()

    # With exp_scale the scales guide the text and the expression keeps its own scale: the same codes as
    # sample_codes(text_scale=3, exp_scale=1) for the held-out captions and expressions.
    from scd.evaluate import evaluation_sets, world_metrics
    from scd.sampling import sample_codes
    from scd.synthetic import AttributeWorld
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        eval_cfg = compose("evaluate", overrides=[f"ckpt={run / 'export'}", "num_samples=16", "steps=2",
                                                  "scales=[3]", "exp_scale=1", f"out_dir={tmp_path / 'eval_sep'}",
                                                  "device=cpu", "paths.output_dir=unused"])
    row = evaluate(eval_cfg)["sweep"][0]
    world = AttributeWorld(**bundle.config["extra"]["world"])
    held_out, reference = evaluation_sets(world, 16, eval_cfg.sample_seed)
    captions = held_out.first_captions()
    codes = sample_codes(bundle, captions, held_out.expressions, num_samples=16, text_scale=3, exp_scale=1,
                         steps=2, seed=0)
    expected = world_metrics(world, codes, captions, held_out.expressions, reference)
    assert row["exp_scale"] == 1.0 and all(row[k] == pytest.approx(v) for k, v in expected.items())
    assert "text scale 3, expression scale 1" in (tmp_path / "eval_sep" / "results.md").read_text()
    with pytest.raises(ValueError, match="needs the expressions"):
        evaluate(OmegaConf.merge(eval_cfg, {"use_exp": False}))

    # Resuming restores weights, EMA, optimizer and step count, loading the Lightning checkpoint weights-only.
    # This run keeps the demo's export settings: EMA weights only, stored in float16.
    resumed = tmp_path / "resumed"
    train(compose_demo(resumed, *TINY_CALLBACKS, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                       "trainer.max_epochs=2"))
    half = load_scd(resumed / "export")
    assert half.config["extra"]["global_step"] == 4 and half.config["extra"]["epoch"] == 2
    assert not half.config["has_ema"] and half.config["extra"]["dtype"] == "float16"
    stored = load_file(str(resumed / "export" / "model.safetensors"))
    assert all(v.dtype == torch.float16 for v in stored.values())
    assert all(v.dtype == torch.float32 for v in half.denoiser.state_dict().values())  # cast back on load


def test_text_only_training_never_shows_an_expression(tmp_path, monkeypatch):
    from scd.train import train

    calls = []
    original = StyleCodeDenoiser.forward

    def spy(self, x, t, text=None, exp=None, *, text_keep=None, exp_keep=None):
        shown = exp is not None and (exp_keep is None or bool(exp_keep.any()))
        calls.append((self.training, shown))
        return original(self, x, t, text, exp, text_keep=text_keep, exp_keep=exp_keep)

    monkeypatch.setattr(StyleCodeDenoiser, "forward", spy)
    # No logger with the default callbacks: the learning-rate monitor, which needs one, is left out.
    train(compose_demo(tmp_path, "model.exp_drop_prob=1.0", "logger=none", "~callbacks.sample_images"))
    assert sum(training for training, _ in calls) == 2          # the two training steps
    assert len(calls) > 2 and not any(shown for _, shown in calls)  # nor in validation loss or sampling


# ---- the command line --------------------------------------------------------------------------------------
def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROJECT_ROOT": str(cwd)}
    return subprocess.run([sys.executable, "-m", "scd.train", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_cli_bad_data_dir_is_one_line_error(tmp_path):
    result = run_cli("experiment=text_only", f"data.data_dir={tmp_path / 'nope'}", cwd=tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: style-code dataset not found") and "nope" in last
    assert "Traceback" not in result.stderr


def test_cli_sweep_runs_one_folder_per_job(tmp_path):
    result = run_cli("-m", "model.optimizer.lr=1e-4,3e-4", "experiment=demo", "trainer.max_epochs=1",
                     "logger=csv", *TINY, "callbacks.sample_images.steps=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((tmp_path / "outputs" / "demo" / "multiruns").glob("*/*"))
    assert [j.name for j in jobs if j.is_dir()] == ["0", "1"]
    lrs = {OmegaConf.load(j / ".hydra" / "config.yaml").model.optimizer.lr for j in jobs if j.is_dir()}
    assert lrs == {1e-4, 3e-4}
    assert all((j / "export" / "config.json").is_file() for j in jobs if j.is_dir())


# ---- the learning proof ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_learning_proof_guidance_raises_attribute_accuracy(tmp_path):
    """Train experiment=demo from scratch, then sample 500 held-out captions at guidance scales 0, 1, 3, 7.

    The same settings as the documented `python -m scd.evaluate ckpt=<run>/export num_samples=500` (joint
    guidance with the held-out expressions) and its `use_exp=false` variant (text alone); the numbers of those
    runs are in docs/LEARNING.md and the bounds below leave room for floating-point differences between machines
    and thread counts. Takes about 20 minutes on 2 CPU cores.
    """
    from scd.checkpoint import load_scd
    from scd.evaluate import evaluation_sets, guidance_sweep
    from scd.synthetic import AttributeWorld
    from scd.train import train

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo", f"paths.output_dir={tmp_path}", "logger=none",
                                          "trainer.enable_progress_bar=false", "~callbacks.sample_images"])
    train(cfg)
    model = load_scd(tmp_path / "export")
    world = AttributeWorld(**model.config["extra"]["world"])
    held_out, reference = evaluation_sets(world, 500, sample_seed=1000)
    scales = (0, 1, 3, 7)
    sweeps = {}
    for use_exp in (True, False):
        rows = guidance_sweep(model, world, held_out, reference, scales=list(scales), steps=50, seed=0,
                              use_exp=use_exp, batch_size=250)
        sweeps[use_exp] = {key: [row[key] for row in rows] for key in rows[0]}
        print("joint" if use_exp else "text", {k: [round(v, 3) for v in vs] for k, vs in sweeps[use_exp].items()})
    text, joint = sweeps[False], sweeps[True]
    chance, chance_presence = text["attr_acc/chance"][0], text["attr_acc_presence/chance"][0]

    # Guided by the caption, every attribute measure rises with the scale, far above chance and the unguided
    # (scale 0) samples, which ignore the caption.
    degree, presence, gender = text["attr_acc/mean"], text["attr_acc_presence/mean"], text["attr_acc/gender"]
    for values in (degree, presence, gender):
        assert all(b > a - 0.02 for a, b in zip(values, values[1:])), values
    assert abs(degree[0] - chance) < 0.05 and degree[3] > chance + 0.12 and degree[3] > degree[0] + 0.12
    assert presence[3] > chance_presence + 0.15 and presence[3] > presence[0] + 0.15
    assert gender[0] < 0.6 and min(gender[1:]) > 0.95
    # With the expressions too (the paper's joint guidance): attributes as above, and the expression followed.
    assert joint["attr_acc/mean"][2] > joint["attr_acc/mean"][0] + 0.12
    assert joint["exp_error"][1] < 0.3 * joint["exp_error"][0]


def test_last_checkpoint_follows_the_latest_epoch_even_without_improvement(tmp_path):
    """lr 0 keeps the validation loss flat; last.ckpt (what resuming reads) must still be the final epoch."""
    from scd.train import train

    train(compose_demo(tmp_path, "model.optimizer.lr=0", "trainer.max_epochs=3", "~callbacks.sample_images"))
    last = tmp_path / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] == 6 and state["epoch"] == 2
    assert sorted(p.name for p in last.parent.glob("*.ckpt")) == ["epoch_002.ckpt", "last.ckpt"]


def test_ddp_with_two_cpu_processes(tmp_path):
    """trainer=ddp on CPU (gloo backend): the same strategy, samplers and rank-zero export as on GPUs."""
    result = run_cli("experiment=demo", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                     "trainer.precision=32-true", "logger=csv", *TINY, "callbacks.sample_images.steps=2",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stderr + result.stdout
    runs = list((tmp_path / "outputs" / "demo" / "runs").iterdir())
    assert len(runs) == 1, runs   # both ranks write into the run folder of rank 0
    assert (runs[0] / "export" / "config.json").is_file() and (runs[0] / "checkpoints" / "last.ckpt").is_file()


# ---- GPU (skipped without CUDA) --------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_train_on_gpu_in_bf16(tmp_path):
    from scd.train import train

    metrics = train(compose_demo(tmp_path, "trainer=gpu", *TINY_CALLBACKS))
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])
    assert (tmp_path / "export" / "config.json").is_file() and list((tmp_path / "samples").glob("*.png"))


@pytest.mark.gpu
def test_ddp_on_two_gpus(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("trainer=ddp needs at least 2 GPUs")
    result = run_cli("experiment=demo", "trainer=ddp", "trainer.devices=2", "logger=csv", *TINY,
                     "callbacks.sample_images.steps=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "demo" / "runs").glob("*/export/config.json"))
    assert len(runs) == 1
