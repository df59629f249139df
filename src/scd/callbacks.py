"""Training callbacks of the SCD: rendered samples of fixed prompts (the export is ``SCDModule.export``, kept up to
date by ``texface.training.Export``)."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import torch

from eg3d.checkpoint import generator_from_config
from eg3d.frames import FrameRenderer
from texface.media import tile
from texface.training import log_image

log = logging.getLogger(__name__)


class SampleImages(L.Callback):
    """Samples fixed prompts with the inference (EMA) denoiser and renders them with the generator.

    Every ``every_n_epochs`` epochs (and at the end of training) the codes of ``prompts`` are sampled from
    the same noise (``seed``), rendered at the frontal camera, tiled into one grid, written to
    ``dirpath/step_XXXXXXX.png`` and logged to W&B (``samples``) or TensorBoard. Runs on rank zero only.

    Args:
        generator: config of the EG3D generator (``conf/generator/``), instantiated when fitting starts.
        prompts: captions, one sample each.
        dirpath: folder of the PNG grids.
        every_n_epochs: render period in epochs.
        cond_scale: joint classifier-free guidance scale.
        steps: DDIM steps.
        seed: seed of the initial noise.
        noise_mode: the generator's noise mode ('const' keeps the renders comparable across epochs).
        precision, compile: the rendering path (:func:`eg3d.fast.accelerate`; auto = the fastest within budget
            on CUDA).
    """

    def __init__(self, *, generator: Mapping, prompts: Sequence[str], dirpath: str | os.PathLike,
                 every_n_epochs: int = 5, cond_scale: float = 7.0, steps: int = 50, seed: int = 0,
                 noise_mode: str = "const", precision: str = "auto", compile: str = "none"):
        prompts = [str(p) for p in prompts]
        if not prompts:
            raise ValueError("SampleImages needs at least one prompt")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.generator_config = generator
        self.prompts = prompts
        self.dirpath = Path(dirpath)
        self.every_n_epochs, self.cond_scale, self.steps = int(every_n_epochs), float(cond_scale), int(steps)
        self.seed = int(seed)
        self.render_options = {"noise_mode": noise_mode, "precision": precision, "compile": compile}
        self._generator: torch.nn.Module | None = None
        self._renderer: FrameRenderer | None = None
        self._last_step: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Build the generator now (rank zero only): a wrong generator config fails before training starts.
        if trainer.is_global_zero and self._generator is None:
            self._generator = generator_from_config(self.generator_config)

    @torch.no_grad()
    def render(self, pl_module: L.LightningModule) -> torch.Tensor:
        """uint8 grid (H, W, 3) of the prompts' samples."""
        if self._renderer is None or self._renderer.device != pl_module.device:
            # Built on the module's device (known once training runs), where 'auto' picks the rendering path.
            self._renderer = FrameRenderer(self._generator.to(pl_module.device), **self.render_options)
        codes = pl_module.sample(self.prompts, None, num_samples=len(self.prompts), cond_scale=self.cond_scale,
                                 steps=self.steps, seed=self.seed)                      # (B, 14, 512)
        with torch.autocast(pl_module.device.type, enabled=False):
            frames = self._renderer.render(codes.float())                              # (B, S, S, 3)
        return tile(frames, ncols=min(len(codes), 4))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.log_samples(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last_step != trainer.global_step:  # the final weights, when the period did not end on them
            self.log_samples(trainer, pl_module)

    def log_samples(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        if not trainer.is_global_zero:
            return
        grid = self.render(pl_module)
        path = log_image(trainer, "samples", grid, self.dirpath / f"step_{trainer.global_step:07d}.png",
                         caption=" | ".join(self.prompts))
        log.info("samples at step %d: %s", trainer.global_step, path)
