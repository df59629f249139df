"""Lightning training from a Hydra config: the one ``fit`` behind every training command.

A training config names a ``data`` DataModule, a ``model`` LightningModule, ``callbacks`` and ``logger`` groups
(each entry with a ``_target_``) and a ``trainer``; :func:`fit` builds them, trains, and returns the last logged
metrics. ``scd.train`` (and the face world's and the inversion's trainings) are thin commands over it.
"""
from __future__ import annotations

import logging
import warnings

from omegaconf import DictConfig, OmegaConf

from texface.config import instantiate

log = logging.getLogger(__name__)


def instantiate_all(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a group such as ``callbacks`` or ``logger`` (None -> [])."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if isinstance(node, DictConfig) and "_target_" in node]


def fit(cfg: DictConfig) -> tuple[dict[str, float], list]:
    """Fit the model described by ``cfg``; return (the last logged metrics as floats, the callbacks)."""
    import lightning as L
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
