"""Checks of plain option values, with the one message format every command uses (raises ConfigError)."""
from __future__ import annotations

import math
from collections.abc import Sequence

from texface.errors import ConfigError


def check_choice(name: str, value, choices: Sequence):
    """``value`` if it is one of ``choices``; else ConfigError "name must be one of a, b, c, got 'x'"."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def check_int(name: str, value, minimum: int | None = None) -> int:
    """``value`` if it is an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ConfigError(f"{name} must be an integer{bound}, got {value!r}")
    return value


def check_number(name: str, value, *, optional: bool = False, minimum: float | None = None,
                 maximum: float | None = None) -> float | None:
    """``value`` as a float if it is a finite number in [minimum, maximum]; None passes when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number{' or null' if optional else ''}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value!r}")
    return float(value)
