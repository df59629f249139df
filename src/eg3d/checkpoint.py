"""Checkpoint directories: safetensors tensors + a JSON config, written atomically.

A checkpoint is a directory holding ``config.json`` (plain data: the constructor arguments and anything else a
loader needs) and one or more ``<name>.safetensors`` files. Nothing in it is executable, so loading one never runs
code. Writes go to a temporary sibling directory that is renamed into place, so a crash never leaves a
half-written checkpoint and an existing checkpoint at the same path is only replaced once the new one is complete.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CONFIG_FILE = "config.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or malformed."""


def write_checkpoint(path: str | os.PathLike, config: dict, tensors: dict[str, dict[str, torch.Tensor]]) -> Path:
    """Atomically write ``config`` and each ``tensors[name]`` state dict to ``path/<name>.safetensors``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        for name, state in tensors.items():
            state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
            save_file(state, str(tmp / f"{name}.safetensors"))
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_config(path: str | os.PathLike) -> dict:
    """Read ``path/config.json``; raise CheckpointError with a readable message if it is missing or malformed."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_dir() or not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path} is not a texface checkpoint directory (expected {CONFIG_FILE} inside it)")
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path / CONFIG_FILE} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path / CONFIG_FILE} must hold a JSON object, got {type(config).__name__}")
    return config


def read_tensors(path: str | os.PathLike, name: str) -> dict[str, torch.Tensor]:
    """Read ``path/<name>.safetensors`` on the CPU; raise CheckpointError if it is missing or corrupt."""
    file = Path(path) / f"{name}.safetensors"
    if not file.is_file():
        raise CheckpointError(f"checkpoint {path} has no {file.name}")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{file} is not a readable safetensors file: {err}") from None
