"""Lightning training from a Hydra config: the one ``fit`` behind every training command.

A training config names a ``data`` DataModule, a ``model`` LightningModule, ``callbacks`` and ``logger`` groups
(each entry with a ``_target_``) and a ``trainer``; :func:`fit` builds them, trains, and returns the last logged
metrics. ``scd.train`` (and the face world's and the inversion's trainings) are thin commands over it.
:func:`warmup_cosine` is the learning-rate schedule they share; :class:`Export` keeps a module's own checkpoint
format up to date during a run.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

from texface.config import instantiate
from texface.errors import ConfigError

log = logging.getLogger(__name__)


def instantiate_all(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a group such as ``callbacks`` or ``logger`` (None -> [])."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if isinstance(node, DictConfig) and "_target_" in node]


def fit(cfg: DictConfig) -> tuple[dict[str, float], list]:
    """Fit the model described by ``cfg``; return (the last logged metrics as floats, the callbacks)."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    print(OmegaConf.to_yaml(cfg, resolve=True), flush=True)  # the resolved config, before any expensive work
    L.seed_everything(cfg.seed, workers=True)

    log.info("instantiating datamodule <%s>", cfg.data._target_)
    datamodule = instantiate(cfg.data)
    log.info("instantiating model <%s>", cfg.model._target_)
    model = instantiate(cfg.model)
    callbacks = instantiate_all(cfg.get("callbacks"))
    loggers = instantiate_all(cfg.get("logger"))
    if not loggers:  # Lightning refuses a learning-rate monitor without a logger (`logger=none`)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    # Frozen parts (text towers, EMA copies, generators) are in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")
    # Lightning checkpoints hold only tensors and plain data, so resuming never needs to unpickle code.
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    return metrics, callbacks


def warmup_cosine(optimizer: Optimizer, *, total_steps: int, warmup_steps: int = 0,
                  final_lr_ratio: float = 0.0) -> LRScheduler:
    """Linear warmup from lr/warmup_steps to lr over ``warmup_steps``, then cosine decay to lr*final_lr_ratio at
    ``total_steps``: torch's LinearLR then CosineAnnealingLR.

    Args:
        total_steps: optimizer steps of the whole run (the module passes the trainer's estimate).
        warmup_steps: steps of linear warmup; 0 starts at the full rate. The first step already trains at
            lr/warmup_steps (a warmup from 0 would waste it).
        final_lr_ratio: the rate at ``total_steps`` as a fraction of the peak rate (of the first parameter
            group), in [0, 1].
    """
    if warmup_steps < 0 or total_steps < 1:
        raise ConfigError(f"need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps} and {total_steps}")
    if not 0.0 <= final_lr_ratio <= 1.0:
        raise ConfigError(f"final_lr_ratio must be in [0, 1], got {final_lr_ratio}")
    peak = optimizer.param_groups[0]["lr"]
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=peak * final_lr_ratio)
    if warmup_steps <= 1:  # a one-step warmup is the full rate from the start
        return cosine
    warmup = LinearLR(optimizer, start_factor=1 / warmup_steps, end_factor=1.0, total_iters=warmup_steps - 1)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


class Export(L.Callback):
    """Keeps ``dirpath`` an up-to-date export of the LightningModule in its own checkpoint format: calls
    ``pl_module.export(dirpath, **options)`` whenever Lightning saves a checkpoint and when training ends, on rank
    zero only. ``written`` says whether this process wrote it."""

    def __init__(self, *, dirpath: str | os.PathLike, **options):
        self.dirpath, self.options, self.written = Path(dirpath), options, False

    def export(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            pl_module.export(self.dirpath, **self.options)
            self.written = True

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.export(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.export(trainer, pl_module)


def written_export(callbacks: list) -> Path | None:
    """The folder an :class:`Export` among ``callbacks`` wrote in this process, or None."""
    return next((c.dirpath for c in callbacks if isinstance(c, Export) and c.written), None)


def optimizer_config(params, optimizer: Callable, scheduler: Callable | None, trainer: L.Trainer) -> dict:
    """What ``configure_optimizers`` returns for factories from the config: ``optimizer(params=...)`` and, unless
    None, ``scheduler(optimizer, total_steps=<the trainer's estimate>)`` stepped every optimizer step."""
    built = optimizer(params=params)
    if scheduler is None:
        return {"optimizer": built}
    total = max(1, int(trainer.estimated_stepping_batches))
    return {"optimizer": built, "lr_scheduler": {"scheduler": scheduler(built, total_steps=total), "interval": "step"}}


def log_image(trainer: L.Trainer, key: str, grid, path: str | os.PathLike, caption: str | None = None) -> Path:
    """Save ``grid`` (H, W, 3) uint8 to ``path`` and send it to the run's image loggers (W&B, TensorBoard) at the
    current step; returns the path. Called on rank zero."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    from texface.media import save_png

    path = save_png(grid, path)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[grid], caption=None if caption is None else [caption],
                             step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, trainer.global_step, dataformats="HWC")
    return path
