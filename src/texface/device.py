"""The one device resolution every command and library entry uses: ``auto`` means CUDA when present, else CPU."""
from __future__ import annotations

import torch

from texface.errors import ConfigError


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``'auto'`` -> ``cuda`` when a CUDA device is present, else ``cpu``; ``'cpu'``, ``'cuda'``, ``'cuda:N'`` as
    given. Raises ConfigError for an unknown name or a CUDA device that is not there."""
    if isinstance(spec, torch.device):
        device = spec
    elif spec == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(spec)
        except (RuntimeError, TypeError) as err:
            raise ConfigError(f"device must be auto, cpu or cuda[:N], got {spec!r} ({err})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={spec} but no CUDA device is available; use device=cpu or device=auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device={spec} but only {torch.cuda.device_count()} CUDA device(s) are present")
    elif device.type != "cpu":
        raise ConfigError(f"device must be auto, cpu or cuda[:N], got {spec!r}")
    return device
