"""Checkpoint directories: safetensors tensors + a JSON config, written atomically.

A checkpoint is a directory holding ``config.json`` (plain data: the constructor arguments and anything else a
loader needs, including its ``format`` name and version) and one or more ``<name>.safetensors`` files. Nothing in
it is executable, so loading one never runs code. Writes go through :func:`texface.atomic.atomic_directory`, so a
crash never leaves a half-written checkpoint and an existing one at the same path is only replaced once the new one
is complete. Each model's own checkpoint module (``eg3d.checkpoint``, ``scd.checkpoint``) builds on these.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import Tensor
from safetensors.torch import load_file, save_file

from texface.atomic import atomic_directory
from texface.errors import CheckpointError, ConfigError, first_line

CONFIG_FILE = "config.json"


def write_checkpoint(path: str | os.PathLike, config: dict, tensors: dict[str, dict[str, torch.Tensor]]) -> Path:
    """Atomically write ``config`` and each ``tensors[name]`` state dict to ``path/<name>.safetensors``."""
    path = Path(path)
    text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False)  # before anything is written
    with atomic_directory(path) as tmp:
        for name, state in tensors.items():
            state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
            save_file(state, str(tmp / f"{name}.safetensors"))
        (tmp / CONFIG_FILE).write_text(text)
    return path


def read_config(path: str | os.PathLike, *, kind: str | None = None, format: str | None = None,
                version: tuple[str, int] | None = None) -> dict:
    """Read ``path/config.json``; raise CheckpointError with a readable message if it is missing or malformed.

    Args:
        kind: what the caller expects, for messages ("generator", "SCD").
        format: the required value of the config's ``format`` entry; None accepts any.
        version: (key, number) the config must hold, e.g. ("format_version", 1); None accepts any.
    """
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
    if format is not None and config.get("format") != format:
        raise CheckpointError(f"{path} is not {_article(kind)} {kind} checkpoint (format {config.get('format')!r}, "
                              f"expected {format!r})")
    if version is not None and config.get(version[0]) != version[1]:
        raise CheckpointError(f"{path} has {kind} format version {config.get(version[0])!r}; this code reads "
                              f"version {version[1]}")
    return config


def _article(word: str | None) -> str:
    return "an" if word and word[0].upper() in "AEIOUS" else "a"


def read_tensors(path: str | os.PathLike, name: str) -> dict[str, torch.Tensor]:
    """Read ``path/<name>.safetensors`` on the CPU; raise CheckpointError if it is missing or corrupt."""
    file = Path(path) / f"{name}.safetensors"
    if not file.is_file():
        raise CheckpointError(f"checkpoint {path} has no {file.name}")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{file} is not a readable safetensors file: {err}") from None


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], *, source, kind: str) -> None:
    """``model.load_state_dict(state, strict=True)``, with a CheckpointError listing every missing, unexpected and
    mis-shaped key (``source`` names where the weights came from, ``kind`` what they should fit)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    problems = [f"{label} ({len(keys)}): {some_keys(keys)}" for label, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
                if keys]
    if problems:
        raise CheckpointError(f"{source}: state dict does not match the {kind}; this checkpoint does not fit it: "
                              + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def some_keys(items: list[str], n: int = 8) -> str:
    """The first ``n`` of ``items`` joined for a message, with how many more there are."""
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def read_state_dict(path: str | os.PathLike, *, what: str, expected: str) -> dict[str, Tensor]:
    """The tensors of a weight file: ``torch.load(weights_only=True)``, or safetensors for a ``.safetensors`` name.

    Args:
        path: the file.
        what: what the file holds, for messages ("ArcFace IR-SE50 weights").
        expected: which file to pass instead, for the missing-file message ("model_ir_se50.pth (...)").

    Raises:
        ConfigError: no file at ``path``.
        CheckpointError: unreadable, or not a flat {name: tensor} state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}; pass the path of {expected}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = load_torch_file(path)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 (torch.load raises many types, KeyError included, for non-weights files)
        reason = f"{type(err).__name__}: {first_line(err)}" if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a readable weights file ({what}): {reason}") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors ({what}; expected {expected})")
    return state


def load_torch_file(path: str | os.PathLike, *, error: type[CheckpointError] = CheckpointError):
    """``torch.load(path, map_location='cpu', weights_only=True)``: only tensors and plain containers are rebuilt, so
    no code from the file runs. A missing, corrupt or code-carrying file raises ``error`` with one readable line
    (torch's own message wraps the reason in advice to load the file unsafely; only the reason is kept)."""
    import pickle
    import re

    path = Path(path)
    if not path.is_file():
        raise error(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            raise error(f"{path}: refusing to load it: it references the Python object {found.group(1)}, which "
                        "torch.load(weights_only=True) does not rebuild (it reads only tensors and plain "
                        "containers); nothing from the file was run") from None
        boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1) ", "(2) ")
        lines = [line.strip().removeprefix("WeightsUnpickler error:").strip() for line in text.splitlines()]
        reason = " ".join(line for line in lines if line and not line.startswith(boilerplate)) or "not a pickle"
        raise error(f"{path} is not a readable PyTorch checkpoint ({reason})") from None
    except Exception as err:  # noqa: BLE001 (torch.load raises many types for files that are not checkpoints)
        raise error(f"{path} is not a readable PyTorch checkpoint: {type(err).__name__}: {first_line(err)}") from None
