"""Fit the face world's models: ``python -m faceworld.fit [experiment=world_clip|world_classifier|world_identity]``.

A thin command over :func:`texface.training.fit` (conf/fit.yaml). By default it fits the world's generator
(:class:`faceworld.views.FaceWorldViews`, :class:`faceworld.generator_fit.GeneratorFit`) and its ``export/`` is a
generator checkpoint (``generator.ckpt=<run>/export`` everywhere); the experiments fit the world CLIP
(:mod:`faceworld.clip`) and the readers (:mod:`faceworld.readers`). Resume a stopped run with
``ckpt_path=<run>/checkpoints/last.ckpt``.
"""
from __future__ import annotations

from omegaconf import DictConfig

from texface.cli import hydra_command
from texface.training import fit, written_export


def fit_world_model(cfg: DictConfig) -> dict[str, float]:
    """Fit the face-world model described by ``cfg`` (the generator by default, a reader or the world CLIP with
    ``experiment=``); returns the last logged metrics."""
    metrics, callbacks = fit(cfg)
    export = written_export(callbacks)
    if export is not None:
        print(f"exported: {export}", flush=True)
    return metrics


main = hydra_command("fit", fit_world_model)

if __name__ == "__main__":
    main()
