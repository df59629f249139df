"""scd.train: train(cfg) end to end on the real demo config (shrunk), resuming, the command line, sweeps, DDP on
CPU processes, and the learning proof (slow)."""
from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from scd.denoiser import StyleCodeDenoiser
from scd.evaluation import evaluation_sets, guidance_sweep
from scd.pipeline import SCDPipeline
from scd.synthetic import AttributeWorld
from scd.train import train
from safetensors.torch import load_file

from scd_training import TINY, TINY_CALLBACKS, compose_demo, run_cli
from texface.config import compose


def test_train_returns_finite_metrics_and_writes_the_run(trained):
    run, metrics = trained
    for name in ("train/loss", "val/loss", "val/attr_acc/mean", "val/exp_error", "val/fd"):
        assert name in metrics and math.isfinite(metrics[name]), name
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "csv").is_dir()


def test_resuming_restores_the_step_and_keeps_the_demo_export_settings(trained, tmp_path):
    """Resuming restores weights, EMA, optimizer and step count, loading the Lightning checkpoint weights-only.
    This run keeps the demo's export settings: EMA weights only, stored in float16."""
    run, _ = trained
    resumed = tmp_path / "resumed"
    train(compose_demo(resumed, *TINY_CALLBACKS, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                       "trainer.max_epochs=2"))
    half = SCDPipeline.from_pretrained(resumed / "export", generator=None, device="cpu")
    assert half.config["extra"]["global_step"] == 4 and half.config["extra"]["epoch"] == 2
    assert not half.config["has_ema"] and half.config["extra"]["dtype"] == "float16"
    stored = load_file(str(resumed / "export" / "model.safetensors"))
    assert all(v.dtype == torch.float16 for v in stored.values())
    assert all(v.dtype == torch.float32 for v in half.denoiser.state_dict().values())  # cast back on load


def test_text_only_training_never_shows_an_expression(tmp_path, monkeypatch):
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


def test_cli_bad_data_dir_is_one_line_error(tmp_path):
    result = run_cli("experiment=text_only", f"data.data_dir={tmp_path / 'nope'}", cwd=tmp_path)
    assert result.returncode == 2
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


def test_last_checkpoint_follows_the_latest_epoch_even_without_improvement(tmp_path):
    """lr 0 keeps the validation loss flat; last.ckpt (what resuming reads) must still be the final epoch."""
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


# ---- the learning proof ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_learning_proof_guidance_raises_attribute_accuracy(tmp_path):
    """Train experiment=demo from scratch, then sample 500 held-out captions at guidance scales 0, 1, 3, 7.

    The same settings as the documented `python -m scd.evaluate ckpt=<run>/export num_samples=500` (joint
    guidance with the held-out expressions) and its `use_exp=false` variant (text alone); the numbers of those
    runs are in docs/LEARNING.md and the bounds below leave room for floating-point differences between machines
    and thread counts. Takes about 20 minutes on 2 CPU cores.
    """
    cfg = compose("train", ["experiment=demo", f"paths.output_dir={tmp_path}", "logger=none",
                            "trainer.enable_progress_bar=false", "~callbacks.sample_images"])
    train(cfg)
    model = SCDPipeline.from_pretrained(tmp_path / "export", generator=None)
    world = AttributeWorld(**model.config["extra"]["world"])
    held_out, reference = evaluation_sets(world, 500, sample_seed=1000)
    scales = (0, 1, 3, 7)
    sweeps = {}
    for use_exp in (True, False):
        rows = guidance_sweep(model, world, held_out, reference, cond_scales=list(scales), steps=50, seed=0,
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
