"""Lightning module that trains the Style Code Denoiser (SCD).

The networks are plain PyTorch (scd.denoiser, scd.diffusion, scd.text); this module only wires them for
training: condition dropout for classifier-free guidance, an EMA copy of the denoiser, AdamW with warmup +
cosine decay (``texface.training.warmup_cosine``), and validation (a fixed-noise loss, plus sampled-code metrics
when the data come from the synthetic world).
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import get_ema_multi_avg_fn

from scd.checkpoint import save_scd
from scd.denoiser import StyleCodeDenoiser
from scd.diffusion import GaussianDiffusion
from scd.pipeline import SCDPipeline
from scd.sampling import check_sampling, check_sampling_keys
from scd.text import TextEncoder
from texface.errors import ConfigError
from texface.training import optimizer_config


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class EMA(nn.Module):
    """An exponential moving average of a module's parameters, for inference only.

    The update is torch's EMA kernel (``torch.optim.swa_utils.get_ema_multi_avg_fn``). We do not use
    ``AveragedModel`` itself because it differs in two ways that matter here: its first update replaces the
    weights instead of averaging them in, and its decay is fixed, while ours warms up (below) so that early
    updates follow the weights without averaging in the random initialisation for thousands of steps.

    Args:
        model: the module to track; a frozen copy of it is kept as ``self.model`` (buffers are copied).
        decay: the EMA rate in [0, 1); 0 copies the weights at every update.
        warmup: if true, the rate at update n is min(decay, (1 + n) / (10 + n)), so early updates follow the
            weights closely instead of averaging the random initialisation in for thousands of steps.
    """

    def __init__(self, model: nn.Module, *, decay: float = 0.9999, warmup: bool = True):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> EMA:
        # The average is never trained: keep dropout off even when the parent module enters training mode.
        super().train(False)
        return self

    def current_decay(self) -> float:
        n = int(self.num_updates)
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema <- decay * ema + (1 - decay) * weights; buffers are copied."""
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        if len(ema_params) != len(params):
            raise ValueError("EMA.update got a module with a different parameter list than the one it tracks")
        get_ema_multi_avg_fn(self.current_decay())(ema_params, params, self.num_updates)
        for ema_buf, buf in zip(self.model.buffers(), model.buffers()):
            ema_buf.copy_(buf)
        self.num_updates += 1


class SCDModule(L.LightningModule):
    """Trains a StyleCodeDenoiser with a GaussianDiffusion on (code, caption, expression) batches.

    Args:
        denoiser: the network being trained.
        diffusion: noise schedule, loss and samplers (buffers only).
        text_encoder: frozen text tower; captions are encoded once and cached by it. Its width must equal
            ``denoiser.text_dim``; its encoding of "" becomes the denoiser's null text.
        optimizer: a factory ``optimizer(params) -> Optimizer`` (a ``_partial_`` config).
        scheduler: a factory ``scheduler(optimizer, total_steps=...) -> LRScheduler`` stepped every optimizer
            step, or None for a constant rate.
        ema: a factory ``ema(denoiser) -> EMA``; None keeps no average (the raw weights are then used for
            validation, sampling and export).
        text_drop_prob: probability of replacing a sample's caption by the null text during training.
        exp_drop_prob: probability of replacing a sample's expression by the learned null token; 1 trains a
            text-only model. Samples without an expression (``has_exp`` false) always use the null token.
        val_sampling: ``{num_samples, steps, cond_scale}`` for the sampled-code metrics computed at the end of each
            validation epoch when the datamodule has a synthetic ``world``; None turns them off.
        sampling: generation defaults of this model (keys of ``scd.sampling.SAMPLING_KEYS``, e.g. ``{clamp:
            false}`` for codes outside [-1, 1]), used by validation and stored in the export; the rest stay the
            paper's (``DEFAULT_SAMPLING``).
    """

    def __init__(self, *, denoiser: StyleCodeDenoiser, diffusion: GaussianDiffusion,
                 text_encoder: TextEncoder, optimizer: Callable[..., Optimizer],
                 scheduler: Callable[..., LRScheduler] | None = None,
                 ema: Callable[[nn.Module], EMA] | None = None, text_drop_prob: float = 0.5,
                 exp_drop_prob: float = 0.5, val_sampling: dict | None = None, sampling: dict | None = None):
        super().__init__()
        for name, p in (("text_drop_prob", text_drop_prob), ("exp_drop_prob", exp_drop_prob)):
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {p}")
        if text_encoder.width != denoiser.text_dim:
            raise ConfigError(f"the text encoder's width ({text_encoder.width}) differs from the denoiser's "
                             f"text_dim ({denoiser.text_dim}); set model.denoiser.text_dim to "
                             f"{text_encoder.width}")
        self.denoiser = denoiser
        self.diffusion = diffusion
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        with torch.no_grad():
            self.denoiser.set_null_text(self.text_encoder.null_features())
        self.ema = ema(self.denoiser) if ema is not None else None
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.text_drop_prob = float(text_drop_prob)
        self.exp_drop_prob = float(exp_drop_prob)
        self.val_sampling = dict(val_sampling) if val_sampling else None
        check_sampling_keys(sampling, "sampling keys")
        self.sampling = {k: v for k, v in check_sampling(dict(sampling or {})).items() if v is not None}

    # ---- pieces shared by training, validation, callbacks and evaluation -----------------------------------
    @property
    def inference_denoiser(self) -> StyleCodeDenoiser:
        """The EMA weights when kept, else the raw ones."""
        return self.ema.model if self.ema is not None else self.denoiser

    def encode_text(self, captions: list[str]) -> Tensor:
        """(B, 77, width) float32 text features on this device (cached per caption by the encoder)."""
        with torch.autocast(self.device.type, enabled=False):  # the frozen tower runs in float32 under AMP
            return self.text_encoder.encode(list(captions)).to(self.device, torch.float32)

    @torch.no_grad()
    def sample(self, captions: list[str] | None, exp: Tensor | None, *, num_samples: int,
               use_ema: bool = True, **sampling) -> Tensor:
        """Guided DDIM codes (num_samples, 14, 512) with the inference (EMA) or raw denoiser.

        The same sampler as ``python -m scd.generate`` (:meth:`scd.pipeline.SCDPipeline.sample`; ``sampling`` are
        its keyword arguments: cond_scale, text_scale, exp_scale, steps, seed, ...), in float32 even under AMP.
        """
        pipeline = SCDPipeline(denoiser=self.inference_denoiser if use_ema else self.denoiser,
                               diffusion=self.diffusion, text_encoder=self.text_encoder)
        return pipeline.sample(captions, exp, num_samples=num_samples, **{**self.sampling, **sampling})

    def export(self, path: str | os.PathLike, *, dtype: str = "float32", ema_only: bool = False) -> Path:
        """Write the denoiser (raw + EMA), diffusion and text encoder as an SCD checkpoint, with the epoch, the
        step and (when the data come from it) the synthetic world in its ``extra``, so that evaluation can rebuild
        the world.

        Args:
            dtype: storage type of the weights ('float32', 'float16', 'bfloat16'); loading casts them back to
                float32, so a half-precision export only halves the size (and rounds the weights).
            ema_only: store the EMA weights alone, as the checkpoint's only denoiser (half the size again).
        """
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        extra = {"epoch": self.trainer.current_epoch, "global_step": self.trainer.global_step}
        world = getattr(self.trainer.datamodule, "world", None) if self.trainer.datamodule is not None else None
        if world is not None:
            extra["world"] = world.config
        denoiser, ema = self.denoiser, self.ema.model if self.ema is not None else None
        if ema_only and ema is not None:
            denoiser, ema = ema, None
        text_encoder = self.text_encoder
        if DTYPES[dtype] != torch.float32:  # cast copies; the training module keeps its float32 weights
            denoiser = copy.deepcopy(denoiser).to(DTYPES[dtype])
            ema = copy.deepcopy(ema).to(DTYPES[dtype]) if ema is not None else None
            # Rebuilt from its weights rather than deep-copied, so its (possibly large) feature cache is not
            # copied.
            text_encoder = TextEncoder.from_state(text_encoder.config, text_encoder.state_dict()).to(DTYPES[dtype])
        save_scd(path, denoiser=denoiser, ema_denoiser=ema, diffusion_config=self.diffusion.config,
                 text_encoder=text_encoder, sampling=self.sampling,
                 extra={**extra, "dtype": dtype, "ema_only": bool(ema_only)})
        return Path(path)

    # ---- training ------------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        codes, exp = batch["code"], batch["exp"]  # (B, 14, 512), (B, 50)
        text = self.encode_text(batch["caption"])   # (B, 77, width)
        n = codes.shape[0]
        # Independent masks: both kept, text only, expression only and unconditional are all trained.
        text_keep = torch.rand(n, device=self.device) >= self.text_drop_prob
        has_exp = batch["has_exp"].to(self.device)
        exp_keep = (torch.rand(n, device=self.device) >= self.exp_drop_prob) & has_exp

        def model_fn(x: Tensor, t: Tensor) -> Tensor:
            return self.denoiser(x, t, text, exp, text_keep=text_keep, exp_keep=exp_keep)

        loss = self.diffusion.loss(model_fn, codes)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        return loss

    def on_train_epoch_start(self) -> None:
        datamodule = self.trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "set_epoch"):
            datamodule.set_epoch(self.current_epoch)  # another caption per multi-caption code each epoch

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # One EMA update per optimizer step (global_step counts those, also under gradient accumulation).
        if self.ema is not None and self.global_step > int(self.ema.num_updates):
            self.ema.update(self.denoiser)

    def configure_optimizers(self) -> dict:
        return optimizer_config(self.denoiser.parameters(), self.optimizer_factory, self.scheduler_factory,
                                self.trainer)

    # ---- validation ----------------------------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        codes, exp = batch["code"], batch["exp"]
        text = self.encode_text(batch["caption"])
        n = codes.shape[0]
        # The same timesteps and noise at every epoch, so the curve measures the model and not the draw.
        gen = torch.Generator().manual_seed(batch_idx)
        t = torch.randint(0, self.diffusion.num_timesteps, (n,), generator=gen).to(self.device)
        noise = torch.randn(codes.shape, generator=gen).to(self.device)
        denoiser = self.inference_denoiser
        # Conditions as the model is trained to use them: one that is always dropped (text_only) stays dropped.
        text_keep = torch.full((n,), self.text_drop_prob < 1.0, device=self.device)
        exp_keep = batch["has_exp"].to(self.device) & (self.exp_drop_prob < 1.0)

        def model_fn(x: Tensor, t: Tensor) -> Tensor:
            return denoiser(x, t, text, exp, text_keep=text_keep, exp_keep=exp_keep)

        loss = self.diffusion.loss(model_fn, codes, t=t, noise=noise)
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=n)
        return loss

    def on_validation_epoch_end(self) -> None:
        datamodule = self.trainer.datamodule
        world = getattr(datamodule, "world", None)
        if world is None or self.val_sampling is None or self.trainer.sanity_checking:
            return
        val = datamodule.val_data
        k = min(int(self.val_sampling["num_samples"]), len(val))
        captions = val.first_captions()[:k]
        exp = val.expressions[:k]
        codes = self.sample(captions if self.text_drop_prob < 1.0 else None,
                            exp if self.exp_drop_prob < 1.0 else None, num_samples=k,
                            cond_scale=float(self.val_sampling["cond_scale"]),
                            steps=int(self.val_sampling["steps"]),
                            seed=0)
        metrics = world.metrics(codes.cpu(), captions, exp, val.codes)
        # Every rank samples the same noise and gets the same numbers, so no reduction is needed.
        self.log_dict({f"val/{name}": value for name, value in metrics.items()}, on_epoch=True)
