"""Shared pieces of the SCD training tests: the real demo config shrunk to seconds, tiny modules and batches."""
from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig

from scd.denoiser import StyleCodeDenoiser
from scd.diffusion import GaussianDiffusion
from scd.module import EMA, SCDModule
from scd.text import TextEncoder
from texface.config import compose

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


def compose_demo(run_dir: Path, *overrides: str) -> DictConfig:
    """The real ``experiment=demo`` training config, shrunk by TINY, writing into ``run_dir``."""
    return compose("train", ["experiment=demo", f"paths.output_dir={run_dir}", *TINY, *overrides])


def tiny_module(**kwargs) -> SCDModule:
    text_encoder = TextEncoder.from_config(TINY_TEXT, seed=0)
    denoiser = StyleCodeDenoiser(dim=32, depth=1, heads=2, ff_dim=64, dropout=0.0, text_dim=16)
    defaults = dict(denoiser=denoiser, diffusion=GaussianDiffusion(timesteps=100), text_encoder=text_encoder,
                    optimizer=partial(torch.optim.AdamW, lr=1e-3), ema=partial(EMA, decay=0.9))
    return SCDModule(**{**defaults, **kwargs})


def batch_of(n: int, has_exp: bool = True) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"code": torch.rand(n, 14, 512, generator=g) * 2 - 1, "caption": ["a man with a beard"] * n,
            "exp": torch.randn(n, 50, generator=g), "has_exp": torch.full((n,), has_exp)}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROJECT_ROOT": str(cwd)}
    return subprocess.run([sys.executable, "-m", "scd.train", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
