"""Fixtures of the SCD tests: one tiny demo training run shared by the training, export and evaluation tests."""
from __future__ import annotations

import pytest

from scd.train import train
from scd_training import TINY_CALLBACKS, compose_demo


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(run folder, returned metrics) of ``experiment=demo`` shrunk to 2 steps, with sample renders and a full
    (float32, raw + EMA) export."""
    run = tmp_path_factory.mktemp("trained") / "run"
    full_export = ["callbacks.export_scd.dtype=float32", "callbacks.export_scd.ema_only=false"]
    return run, train(compose_demo(run, *TINY_CALLBACKS, *full_export))
