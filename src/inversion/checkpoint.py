"""Re-PoI encoder checkpoints: our directory format (:mod:`texface.checkpoint`).

``config.json`` = {format, format_version, init_kwargs (the :class:`~inversion.encoder.RePoI` constructor
arguments), generator (the :func:`eg3d.checkpoint.build_generator` call of the frozen generator the encoder inverts
into, plain data; a relative ``ckpt`` is relative to the encoder's folder), extra (e.g. measured figures)} and
``model.safetensors`` (the encoder's state dict, official parameter names). The generator's weights are not
stored: it has its own checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from omegaconf import OmegaConf

from eg3d.checkpoint import generator_from_config
from inversion.encoder import RePoI
from texface.checkpoint import load_state_strict, read_config, read_tensors, write_checkpoint
from texface.errors import CheckpointError

ENCODER_FORMAT = "texface.inversion.RePoI"
ENCODER_FORMAT_VERSION = 1
ENCODER_TENSORS = "model"


def save_encoder(encoder: RePoI, path: str | os.PathLike, *, generator: dict, extra: dict | None = None,
                 dtype: torch.dtype | None = None) -> Path:
    """Write ``encoder`` with the build call of its ``generator`` (e.g. ``G.build_config``) and ``extra`` data;
    ``dtype`` stores the floating-point tensors in that type (None keeps them)."""
    config = {"format": ENCODER_FORMAT, "format_version": ENCODER_FORMAT_VERSION, "init_kwargs": encoder.config,
              "generator": dict(generator), "extra": dict(extra or {})}
    # Clones: the three layers of a mapper share one rotary buffer, and safetensors refuses shared memory.
    state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return write_checkpoint(path, config, {ENCODER_TENSORS: state})


def read_encoder_config(path: str | os.PathLike) -> dict:
    """The checked ``config.json`` of an encoder checkpoint."""
    config = read_config(path, kind="Re-PoI encoder", format=ENCODER_FORMAT,
                         version=("format_version", ENCODER_FORMAT_VERSION))
    if not isinstance(config.get("init_kwargs"), dict) or not isinstance(config.get("generator"), dict):
        raise CheckpointError(f"{path}/config.json needs 'init_kwargs' and 'generator' objects")
    return config


def load_encoder(path: str | os.PathLike, map_location="cpu") -> RePoI:
    """The encoder of checkpoint ``path`` in eval mode (float32), gradients off."""
    config = read_encoder_config(path)
    try:
        encoder = RePoI(**config["init_kwargs"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot build a Re-PoI encoder from its init_kwargs: {err}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in read_tensors(path, ENCODER_TENSORS).items()}
    load_state_strict(encoder, state, source=path, kind="Re-PoI encoder")
    return encoder.to(map_location).eval().requires_grad_(False)


def encoder_generator(path: str | os.PathLike, override=None):
    """The frozen generator encoder checkpoint ``path`` inverts into: its recorded build call with ``override``
    entries (a mapping or a config node, e.g. a command's ``generator:``; None = none) merged in; a relative
    ``ckpt`` is resolved against ``path``."""
    node = dict(read_encoder_config(path)["generator"])
    if override:
        node.update(OmegaConf.to_container(OmegaConf.create(override), resolve=True))
    if node.get("ckpt") and not Path(node["ckpt"]).is_absolute() and (Path(path) / node["ckpt"]).exists():
        node["ckpt"] = str(Path(path) / node["ckpt"])
    return generator_from_config(OmegaConf.create(node))
