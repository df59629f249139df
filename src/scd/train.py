"""Train the Style Code Denoiser: ``python -m scd.train experiment=demo``.

Everything is built from the Hydra config (conf/train.yaml and its groups) by :func:`texface.training.fit`: the
datamodule, the LightningModule, callbacks, loggers and the trainer. ``train(cfg)`` is importable (tests and
sweeps call it) and returns the final metrics; ``main`` is the thin command around it.
Sweeps: ``python -m scd.train -m model.optimizer.lr=1e-4,3e-4`` (one folder per job) or ``hparams_search=lr``.
"""
from __future__ import annotations

from omegaconf import DictConfig

from texface.cli import hydra_command
from texface.training import fit, written_export


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the SCD described by ``cfg`` and return the last logged metrics as floats."""
    metrics, callbacks = fit(cfg)
    export = written_export(callbacks)
    if export is not None:
        print(f"SCD checkpoint: {export}\n  generate with: python -m scd.generate ckpt={export}", flush=True)
    return metrics


def train_objective(cfg: DictConfig) -> float | None:
    """:func:`train`, returning the metric named by ``optimized_metric`` (what a sweeper optimises)."""
    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


main = hydra_command("train", train_objective)

if __name__ == "__main__":
    main()
