"""scd.callbacks: the SCD export (a complete checkpoint of the run) and the sample renders of fixed prompts."""
from __future__ import annotations

import torch

from scd.pipeline import SCDPipeline


def test_sample_images_are_written_for_the_final_step(trained):
    run, _ = trained
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["step_0000002.png"]


def test_export_is_a_complete_scd_checkpoint(trained):
    """Config, raw and EMA weights, text encoder, and the world it saw."""
    run, _ = trained
    bundle = SCDPipeline.from_pretrained(run / "export", generator=None, device="cpu")
    assert bundle.config["has_ema"] and bundle.text_encoder is not None
    assert bundle.config["extra"]["world"]["seed"] == 0 and bundle.config["extra"]["global_step"] == 2
    assert bundle.config["denoiser"]["dim"] == 32
    raw = SCDPipeline.from_pretrained(run / "export", generator=None, device="cpu", use_ema=False)
    raw, ema = raw.denoiser.state_dict(), bundle.denoiser.state_dict()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)  # EMA and raw weights are both there, and differ
