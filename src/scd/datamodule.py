"""Lightning DataModule of style codes: a dataset directory, or the synthetic attribute world.

Batches are dicts: ``code`` (B, 14, 512) float32, ``caption`` list of B strings ('' = no caption), ``exp``
(B, 50) float32 and ``has_exp`` (B,) bool. Captions stay strings; the module encodes them with its frozen,
caching text encoder.
"""
from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from scd.synthetic import AttributeWorld
from texface.errors import ConfigError
from texface.stylecodes import StyleCodeDataset, StyleCodeSet, train_val_split


class StyleCodeDataModule(L.LightningDataModule):
    """Train/validation loaders over style codes from exactly one source.

    Args:
        data_dir: a style-code dataset directory (data/README.md); a seeded split by id
            (``texface.stylecodes.train_val_split``) holds out ``val_fraction`` of it (at least one code) for
            validation.
        world: the synthetic ``AttributeWorld`` or the face world's ``faceworld.codes.WorldCodes``; ``train_size``
            training and ``val_size`` validation codes are drawn from it with seeds ``sample_seed`` and
            ``sample_seed + 1``. The world is kept as ``self.world`` so that validation can score sampled codes
            with its metrics.
        train_size, val_size, sample_seed: see ``world``.
        val_fraction, split_seed: see ``data_dir``.
        batch_size: codes per training batch (per device under DDP).
        num_workers, pin_memory: DataLoader settings.
    """

    def __init__(self, *, data_dir: str | os.PathLike | None = None, world: AttributeWorld | None = None,
                 train_size: int = 20000, val_size: int = 512, sample_seed: int = 1,
                 val_fraction: float = 0.02, split_seed: int = 0, batch_size: int = 128,
                 num_workers: int = 0, pin_memory: bool = False):
        super().__init__()
        if (data_dir is None) == (world is None):
            raise ConfigError("StyleCodeDataModule needs exactly one source: data_dir (a dataset directory) "
                             "or world (the synthetic attribute world)")
        if world is not None and (train_size < 1 or val_size < 1):
            raise ConfigError(f"train_size and val_size must be >= 1, got {train_size} and {val_size}")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if data_dir is not None and not Path(data_dir).is_dir():  # fail before the model is built
            raise FileNotFoundError(f"style-code dataset not found: {data_dir} (set data.data_dir to a "
                                    f"dataset directory; the format is in data/README.md)")
        self.data_dir = data_dir
        self.world = world
        self.train_size, self.val_size, self.sample_seed = int(train_size), int(val_size), int(sample_seed)
        self.val_fraction, self.split_seed = float(val_fraction), int(split_seed)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.pin_memory = bool(pin_memory)
        # Filled by setup(): the codes and which rows of them each split reads (None = all rows).
        self.train_data: StyleCodeSet | None = None
        self.val_data: StyleCodeSet | None = None
        self.train_indices: list[int] | None = None
        self.val_indices: list[int] | None = None
        self._train_dataset: StyleCodeDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is not None:
            return
        if self.world is not None:
            self.train_data = self.world.sample(self.train_size, seed=self.sample_seed)
            self.val_data = self.world.sample(self.val_size, seed=self.sample_seed + 1)
            return
        data = StyleCodeSet.load(self.data_dir)
        if len(data) < 2:
            raise ConfigError(f"{self.data_dir} holds {len(data)} code(s); training needs at least 2 "
                             f"(train + validation)")
        # The split depends on the ids only, so it survives reordering or growing the dataset.
        self.train_indices, self.val_indices = train_val_split(data.ids, val_fraction=self.val_fraction,
                                                               seed=self.split_seed)
        self.train_data = self.val_data = data

    def set_epoch(self, epoch: int) -> None:
        """Let codes with several captions show another one each epoch (called by the module)."""
        if self._train_dataset is not None:
            self._train_dataset.set_epoch(epoch)

    def train_dataloader(self) -> DataLoader:
        self._train_dataset = StyleCodeDataset(self.train_data, self.train_indices, seed=self.split_seed)
        return self._loader(self._train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        # Validation always reads each code's first caption, so the loss is comparable across epochs.
        dataset = StyleCodeDataset(self.val_data, self.val_indices, first_caption=True)
        return self._loader(dataset, shuffle=False)

    def _loader(self, dataset: StyleCodeDataset, *, shuffle: bool) -> DataLoader:
        # No persistent workers: workers are re-created each epoch, so they see the dataset's current epoch.
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          pin_memory=self.pin_memory)
