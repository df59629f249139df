"""SCD checkpoints: everything ``scd.generate`` needs, as safetensors + JSON (nothing executable).

A checkpoint is a directory written atomically by :func:`texface.checkpoint.write_checkpoint`:

- ``config.json``: ``format`` / ``version``; ``denoiser`` (StyleCodeDenoiser keyword arguments);
  ``diffusion`` (GaussianDiffusion keyword arguments); ``text_encoder``: ``{"kind": "clip_hf", "config":
  <CLIP text config>}`` or null; ``sampling`` (defaults for generation: cond_scale, steps, eta, clamp, ...);
  ``has_ema``; ``extra`` (free JSON data, e.g. the training step);
- ``model.safetensors``: the raw denoiser weights (``null_text``, the CLIP("") features, included);
- ``ema.safetensors``: the EMA denoiser weights (optional);
- ``text_encoder.safetensors``: the frozen CLIP text tower (optional; without it, text features must come from
  elsewhere, e.g. a cache).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from scd.denoiser import StyleCodeDenoiser
from scd.diffusion import GaussianDiffusion
from scd.sampling import DEFAULT_SAMPLING, check_sampling_keys
from scd.text import TextEncoder
from texface.checkpoint import load_state_strict, read_config, read_tensors, write_checkpoint
from texface.errors import CheckpointError, one_line

FORMAT = "texface-scd"
VERSION = 1
TEXT_ENCODER_KIND = "clip_hf"


def save_scd(path: str | os.PathLike, *, denoiser: StyleCodeDenoiser,
             ema_denoiser: StyleCodeDenoiser | None = None, diffusion_config: dict,
             text_encoder: TextEncoder | None = None, sampling: dict | None = None,
             extra: dict | None = None) -> Path:
    """Write an SCD checkpoint directory (atomically; an existing one at ``path`` is replaced when complete).

    Args:
        path: the checkpoint directory.
        denoiser: the raw denoiser; its null text must be set.
        ema_denoiser: the EMA copy (same configuration), or None.
        diffusion_config: GaussianDiffusion keyword arguments (e.g. ``diffusion.config``).
        text_encoder: the CLIP text tower whose features the denoiser was trained on, or None.
        sampling: overrides of the generation defaults ``DEFAULT_SAMPLING`` (keys in ``SAMPLING_KEYS``).
        extra: free JSON-serialisable data stored under ``extra``.
    """
    for name, model in (("denoiser", denoiser), ("ema_denoiser", ema_denoiser)):
        if model is None and name == "ema_denoiser":
            continue
        if not isinstance(model, StyleCodeDenoiser):
            raise TypeError(f"{name} must be a StyleCodeDenoiser, got {type(model).__name__}")
        if not model.null_text_set:
            raise ValueError(f"{name} has no null text; call set_null_text(text_encoder.null_features()) "
                             f"first")
    if ema_denoiser is not None and ema_denoiser.config != denoiser.config:
        raise ValueError(f"ema_denoiser config {ema_denoiser.config} differs from denoiser config "
                         f"{denoiser.config}")
    diffusion = GaussianDiffusion(**diffusion_config).config   # validates and fills in the defaults
    text_config = None
    if text_encoder is not None:
        if text_encoder.width != denoiser.text_dim or text_encoder.context_length != denoiser.text_len:
            raise ValueError(f"text encoder output ({text_encoder.context_length}, {text_encoder.width}) "
                             f"does not match the denoiser's text input ({denoiser.text_len}, "
                             f"{denoiser.text_dim})")
        text_config = {"kind": TEXT_ENCODER_KIND, "config": dict(text_encoder.config)}
    check_sampling_keys(sampling, "sampling keys")
    config = {
        "format": FORMAT,
        "version": VERSION,
        "denoiser": dict(denoiser.config),
        "diffusion": diffusion,
        "text_encoder": text_config,
        "sampling": {**DEFAULT_SAMPLING, **(sampling or {})},
        "has_ema": ema_denoiser is not None,
        "extra": dict(extra or {}),
    }
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint config is not JSON-serialisable (check `extra` and `sampling`): "
                         f"{err}") from None

    tensors = {"model": denoiser.state_dict()}
    if ema_denoiser is not None:
        tensors["ema"] = ema_denoiser.state_dict()
    if text_encoder is not None:
        tensors["text_encoder"] = text_encoder.state_dict()
    return write_checkpoint(path, config, tensors)


def read_scd(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
             use_ema: bool = True) -> tuple[StyleCodeDenoiser, GaussianDiffusion, TextEncoder | None, dict]:
    """Read an SCD checkpoint directory written by ``save_scd`` (or ``python -m scd.convert``): its denoiser (eval
    mode), diffusion, text encoder (or None) and config. :meth:`scd.pipeline.SCDPipeline.from_pretrained` builds
    the pipeline from them.

    Args:
        path: the checkpoint directory.
        map_location: device for the denoiser, the diffusion buffers and the text encoder.
        use_ema: use the EMA weights when the checkpoint has them (otherwise the raw weights).
    Raises:
        CheckpointError: missing files, another format, or weights that do not fit the config.
    """
    config = read_config(path, kind="SCD", format=FORMAT, version=("version", VERSION))
    for key in ("denoiser", "diffusion"):
        if not isinstance(config.get(key), dict):
            raise CheckpointError(f"{path}/config.json has no '{key}' settings")
    try:
        denoiser = StyleCodeDenoiser(**config["denoiser"])
        diffusion = GaussianDiffusion(**config["diffusion"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}/config.json has invalid model settings: {err}") from None

    weights = "ema" if use_ema and config.get("has_ema") else "model"
    load_state_strict(denoiser, read_tensors(path, weights), source=f"{path}/{weights}.safetensors",
                      kind="configured denoiser")

    text_encoder = None
    text_config = config.get("text_encoder")
    if text_config is not None:
        if not isinstance(text_config, dict) or text_config.get("kind") != TEXT_ENCODER_KIND:
            raise CheckpointError(f"{path}: unsupported text encoder entry {text_config!r} "
                                  f"(expected kind {TEXT_ENCODER_KIND!r})")
        try:
            text_encoder = TextEncoder.from_state(text_config.get("config", {}),
                                                  read_tensors(path, "text_encoder"))
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: text encoder does not load: {one_line(err)}") from None
        text_encoder.to(map_location)
    return denoiser.to(map_location).eval(), diffusion.to(map_location), text_encoder, config
