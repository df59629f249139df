"""Train the Re-PoI encoder: ``python -m inversion.train [experiment=repoi]``.

A thin command over :func:`texface.training.fit` (conf/inversion.yaml): by default the encoder learns to invert
face-world heads (:class:`inversion.data.FaceWorldData`) into the shipped world generator; ``experiment=repoi`` is
the paper's setting on EG3D-format FFHQ crops. The run's ``export/`` is an encoder checkpoint
(:mod:`inversion.checkpoint`) for ``inversion.evaluate``, ``inversion.invert`` and ``inversion.encode``. Resume a
stopped run with ``ckpt_path=<run>/checkpoints/last.ckpt``.
"""
from __future__ import annotations

from omegaconf import DictConfig

from texface.cli import hydra_command
from texface.training import fit, written_export


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the encoder described by ``cfg``; returns the last logged metrics."""
    metrics, callbacks = fit(cfg)
    export = written_export(callbacks)
    if export is not None:
        print(f"encoder checkpoint: {export}\n  evaluate with: python -m inversion.evaluate ckpt={export}", flush=True)
    return metrics


main = hydra_command("inversion", train)

if __name__ == "__main__":
    main()
