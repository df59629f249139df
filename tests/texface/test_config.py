"""texface.config: the config root, composing like a command, and instantiation that lets our errors through."""
from __future__ import annotations

import pytest

from helpers import ROOT
from texface.config import compose, config_dir, instantiate
from texface.errors import CheckpointError


def test_the_checkout_configs_are_found():
    assert config_dir() == ROOT / "conf"


def test_compose_gives_the_commands_config():
    cfg = compose("generate", ["num_samples=3"])
    assert cfg.num_samples == 3 and cfg.generator._target_ == "eg3d.checkpoint.build_generator"


def test_instantiate_reraises_our_errors_unwrapped(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        instantiate({"_target_": "eg3d.checkpoint.build_generator", "ckpt": str(tmp_path / "missing")})
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException):  # anything else keeps Hydra's context
        instantiate({"_target_": "eg3d.checkpoint.build_generator", "unknown_argument": 1})
