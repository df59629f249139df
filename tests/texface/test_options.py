"""texface.options and texface.device: the one message format of option checks, and device resolution."""
from __future__ import annotations

import math

import pytest
import torch

from texface.device import resolve_device
from texface.errors import ConfigError
from texface.options import check_choice, check_int, check_number


def test_choices_integers_and_numbers():
    assert check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(ConfigError, match=r"^mode must be one of a, b, got 'c'$"):
        check_choice("mode", "c", ("a", "b"))
    assert check_int("steps", 3, 1) == 3
    for bad in (0, True, 2.0, "3"):
        with pytest.raises(ConfigError, match="steps must be an integer >= 1"):
            check_int("steps", bad, 1)
    assert check_number("eta", 1, minimum=0) == 1.0 and check_number("x", None, optional=True) is None
    for bad in (math.nan, math.inf, "1", None):
        with pytest.raises(ConfigError, match="eta must be a number"):
            check_number("eta", bad)
    with pytest.raises(ConfigError, match="eta must be <= 1"):
        check_number("eta", 1e30, maximum=1)


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device must be auto, cpu or cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            resolve_device("cuda")
