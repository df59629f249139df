"""Train the Style Code Denoiser: ``python -m scd.train experiment=demo``.

Everything is built from the Hydra config (conf/train.yaml and its groups): the datamodule, the
LightningModule, callbacks, loggers and the trainer. ``train(cfg)`` is importable (tests and sweeps call it)
and returns the final metrics; ``main`` is the thin command around it (:func:`texface.cli.hydra_command`).
Sweeps: ``python -m scd.train -m model.optimizer.lr=1e-4,3e-4`` (one folder per job) or ``hparams_search=lr``.
"""
from __future__ import annotations

import logging
import warnings

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from scd.callbacks import ExportSCD
from texface.cli import hydra_command
from texface.config import instantiate

log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a group such as ``callbacks`` or ``logger`` (None -> [])."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if isinstance(node, DictConfig) and "_target_" in node]


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the SCD described by ``cfg`` and return the last logged metrics as floats."""
    print(OmegaConf.to_yaml(cfg, resolve=True), flush=True)  # the resolved config, before any expensive work
    L.seed_everything(cfg.seed, workers=True)

    log.info("instantiating datamodule <%s>", cfg.data._target_)
    datamodule = instantiate(cfg.data)
    log.info("instantiating model <%s>", cfg.model._target_)
    model = instantiate(cfg.model)
    callbacks = _instantiate_all(cfg.get("callbacks"))
    loggers = _instantiate_all(cfg.get("logger"))
    if not loggers:  # Lightning refuses a learning-rate monitor without a logger (`logger=none`)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    # The frozen text tower and the EMA copy are in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")
    # Lightning checkpoints hold only tensors and plain data, so resuming never needs to unpickle code.
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)

    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    for callback in callbacks:
        if isinstance(callback, ExportSCD) and trainer.is_global_zero:
            print(f"SCD checkpoint: {callback.dirpath}\n  generate with: python -m scd.generate "
                  f"ckpt={callback.dirpath}", flush=True)
    return metrics


def train_objective(cfg: DictConfig) -> float | None:
    """:func:`train`, returning the metric named by ``optimized_metric`` (what a sweeper optimises)."""
    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


main = hydra_command("train", train_objective)

if __name__ == "__main__":
    main()
