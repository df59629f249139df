"""scd.datamodule: batches from the synthetic world and from a style-code dataset directory."""
from __future__ import annotations

import pytest
import torch

from scd.datamodule import StyleCodeDataModule
from scd.synthetic import AttributeWorld


def test_datamodule_on_the_synthetic_world():
    dm = StyleCodeDataModule(world=AttributeWorld(seed=0), train_size=24, val_size=8, batch_size=10)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["code"].shape == (10, 14, 512) and batch["code"].dtype == torch.float32
    assert batch["exp"].shape == (10, 50) and batch["has_exp"].dtype == torch.bool
    assert len(batch["caption"]) == 10 and all(isinstance(c, str) for c in batch["caption"])
    val = next(iter(dm.val_dataloader()))
    torch.testing.assert_close(val["code"], dm.val_data.codes[:8])  # in order, the held-out sample
    assert val["caption"] == [c[0] if c else "" for c in dm.val_data.captions[:8]]
    # Train and validation codes are different draws of the same world.
    assert not torch.equal(dm.train_data.codes[:8], dm.val_data.codes)


def test_datamodule_on_a_dataset_directory(tmp_path):
    AttributeWorld(seed=0).sample(20, seed=3).save(tmp_path / "codes")
    dm = StyleCodeDataModule(data_dir=tmp_path / "codes", val_fraction=0.25, batch_size=4)
    dm.setup("fit")
    assert len(dm.train_indices) == 15 and len(dm.val_indices) == 5
    assert not set(dm.train_indices) & set(dm.val_indices)
    assert sum(len(b["caption"]) for b in dm.train_dataloader()) == 15
    with pytest.raises(ValueError, match="exactly one source"):
        StyleCodeDataModule(data_dir=tmp_path, world=AttributeWorld(seed=0))
    with pytest.raises(FileNotFoundError, match="not found"):
        StyleCodeDataModule(data_dir=tmp_path / "missing")
