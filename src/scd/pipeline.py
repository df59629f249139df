"""The SCD pipeline: captions and expressions in, W+ codes and rendered 3D faces out (like a diffusers pipeline).

    from scd.pipeline import SCDPipeline

    pipe = SCDPipeline.from_pretrained()            # the shipped demo SCD and the default generator
    out = pipe("This man has a beard.", num_samples=4, seed=0)
    out.codes                                       # (4, 14, 512) W+ codes
    out.images                                      # uint8 (4, H, W, 3), frontal camera
    pipe.renderer.orbit_video(out.codes, "orbit.mp4")  # all codes in a grid, the official gen_videos orbit
    a, b = pipe.interpolate("This man has a beard.", "This man is smiling.", num_samples=2)
    pipe.renderer.morph_video(a[0], b[0], "morph.mp4")

One object holds the denoiser, its diffusion, the frozen text encoder and (optionally) the EG3D generator that
renders the codes. Sampling follows the official inference: text features are computed once per caption, the
initial noise comes from a CPU generator seeded with ``seed`` (the same start on every device), and guided DDIM
runs with the checkpoint's stored sampling defaults unless others are given (:mod:`scd.sampling`). Which
conditions are given selects the mode: captions and exp (text + expression, the paper), one of them, or neither
(unconditional). ``pipe.renderer`` (:class:`eg3d.frames.FrameRenderer`) renders codes: stills, grids, orbit and
morph videos, on the accelerated path of :func:`eg3d.fast.accelerate` (``precision='auto'``: the fastest path
within budget on CUDA, exact fp32 on the CPU).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from eg3d.checkpoint import default_generator, load_generator
from eg3d.frames import FrameRenderer
from scd.checkpoint import read_scd
from scd.denoiser import StyleCodeDenoiser
from scd.diffusion import GaussianDiffusion
from scd.sampling import (DEFAULT_SAMPLING, SAMPLING_KEYS, check_sampling, check_sampling_keys, initial_noise,
                          prepare_captions, prepare_exp)
from scd.text import TextEncoder
from texface.device import resolve_device
from texface.errors import CheckpointError, ConfigError

DEMO_SCD = Path(__file__).resolve().parent / "assets" / "demo"


@dataclass
class SCDOutput:
    """What a pipeline call returns: ``codes`` (N, T, D) on the CPU, ``images`` uint8 (N, H, W, 3) at the frontal
    camera (None without a generator), and the ``conditions`` and sampling options that produced them."""

    codes: Tensor
    images: np.ndarray | None
    conditions: dict = field(default_factory=dict)


class SCDPipeline:
    """Denoiser + diffusion + text encoder (+ generator): sampling and rendering of W+ style codes.

    Args:
        denoiser: the StyleCodeDenoiser (used in eval mode for sampling).
        diffusion: its GaussianDiffusion.
        text_encoder: the frozen text tower whose features the denoiser was trained on; None takes no captions.
        config: the checkpoint config; its ``sampling`` entry holds the sampling defaults.
        generator: a TriPlaneGenerator to render codes with; None samples codes only.
        **render_options: of the :class:`~eg3d.frames.FrameRenderer` (precision, compile, noise_mode,
            deterministic, batch_size, progress).

    Attributes: ``renderer``, the :class:`~eg3d.frames.FrameRenderer` of the generator (None without one).
    """

    def __init__(self, *, denoiser: StyleCodeDenoiser, diffusion: GaussianDiffusion,
                 text_encoder: TextEncoder | None = None, config: dict | None = None, generator: nn.Module | None = None,
                 **render_options):
        self.denoiser, self.diffusion, self.text_encoder = denoiser, diffusion, text_encoder
        self.config = dict(config or {})
        self.source: Path | None = None  # the checkpoint directory, when loaded from one
        self.generator = generator
        self.renderer = None if generator is None else FrameRenderer(generator, **render_options)
        if generator is not None:
            code_shape = (self.denoiser.config["n_tokens"], self.denoiser.config["code_dim"])
            if code_shape != (generator.num_ws, generator.w_dim):
                raise ConfigError(f"the SCD samples codes of shape {code_shape} but the generator takes "
                                  f"{(generator.num_ws, generator.w_dim)}")

    @classmethod
    def from_pretrained(cls, scd: str | os.PathLike | None = None, generator: str | os.PathLike | nn.Module | None
                        = "default", *, device: str | torch.device = "auto", use_ema: bool = True,
                        **render_options) -> SCDPipeline:
        """Load a pipeline.

        Args:
            scd: an SCD checkpoint directory (``scd.train`` exports, ``python -m scd.convert`` output); None = the
                demo checkpoint shipped in the package.
            generator: 'default' (the project's default generator), a generator checkpoint (anything
                :func:`eg3d.checkpoint.load_generator` reads), a TriPlaneGenerator, or None (codes only).
            device: 'auto' (CUDA when present), 'cpu', 'cuda[:N]'.
            use_ema: the checkpoint's EMA weights when it has them.
            **render_options: of the :class:`~eg3d.frames.FrameRenderer` (precision, compile, noise_mode, ...).
        """
        device = resolve_device(device)
        if scd is None and not DEMO_SCD.exists():
            raise ConfigError(f"no SCD checkpoint given and the demo checkpoint is missing ({DEMO_SCD}); pass "
                              f"one (ckpt=<SCD checkpoint directory>)")
        path = DEMO_SCD if scd is None else Path(scd)
        if not path.exists():
            raise CheckpointError(f"SCD checkpoint not found: {path}")
        if path.is_file():
            raise CheckpointError(f"{path} is a file, but an SCD checkpoint is a directory; convert an official "
                                  f"model.pt with `python -m scd.convert {path} OUT_DIR` and pass OUT_DIR")
        denoiser, diffusion, text_encoder, config = read_scd(path, map_location=device, use_ema=use_ema)
        if isinstance(generator, str) and generator == "default":
            generator = default_generator()
        elif generator is not None and not isinstance(generator, nn.Module):
            generator = load_generator(generator)
        if generator is not None:
            generator = generator.to(device).eval().requires_grad_(False)
        pipeline = cls(denoiser=denoiser, diffusion=diffusion, text_encoder=text_encoder, config=config,
                       generator=generator, **render_options)
        pipeline.source = path.resolve()
        return pipeline

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    # ---- sampling ----------------------------------------------------------------------------------------------
    def sampling_options(self, **given) -> dict:
        """The full sampling options: those given (not None), else the checkpoint's stored defaults, else the
        paper's. Asking for any guidance scale replaces the stored guidance as a whole."""
        stored = {**DEFAULT_SAMPLING, **self.config.get("sampling", {})}
        stored["clamp"] = False if stored.get("clamp") is None else stored["clamp"]
        try:
            stored = check_sampling(stored)
        except ConfigError as err:
            raise CheckpointError(f"the checkpoint's sampling defaults are invalid: {err}") from None
        check_sampling_keys(given)
        given = check_sampling(given)
        if any(given[k] is not None for k in ("cond_scale", "text_scale", "exp_scale")):
            stored["text_scale"] = stored["exp_scale"] = None
        options = {k: stored[k] if given[k] is None else given[k] for k in SAMPLING_KEYS}
        options["clamp"] = options["clamp"] or None  # False (no clamp) -> None, as the sampler takes it
        if options["steps"] > self.diffusion.num_timesteps:
            raise ConfigError(f"steps must be <= the checkpoint's {self.diffusion.num_timesteps} diffusion "
                              f"timesteps, got {options['steps']}")
        return options

    @torch.no_grad()
    def sample(self, captions: str | Sequence[str] | None = None, exp=None, *, num_samples: int = 1, seed: int = 0,
               noise: Tensor | None = None, progress: bool = False, **sampling) -> Tensor:
        """Draw W+ codes (num_samples, n_tokens, code_dim) with guided DDIM, on the pipeline's device.

        Args:
            captions: None (no text), one caption for all samples, or one per sample.
            exp: None (no expression), one (50,) code for all samples, or (num_samples, 50) codes.
            num_samples: how many codes to draw.
            seed: seeds the initial noise (and the step noise when eta > 0).
            noise: explicit initial noise (B, n_tokens, code_dim); overrides ``seed`` for the start. Pass the same
                noise to compare conditions from one starting point (caption interpolation does).
            progress: a progress bar over the denoising steps.
            **sampling: cond_scale (joint guidance u + cond_scale (v(text, exp) - u)), text_scale / exp_scale
                (separate scales, see ``StyleCodeDenoiser.guided``), steps, eta, clamp; unset ones come from
                :meth:`sampling_options`.
        The denoiser runs in eval mode (dropout off) and in float32; its previous mode is restored afterwards.
        """
        if num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
        options = self.sampling_options(**sampling)
        denoiser, device = self.denoiser, self.device
        captions = prepare_captions(captions, num_samples)
        exp = prepare_exp(exp, num_samples, exp_dim=denoiser.config["exp_dim"])
        shape = (num_samples, denoiser.config["n_tokens"], denoiser.config["code_dim"])
        if noise is None:
            noise = initial_noise(*shape, seed=seed)
        elif tuple(noise.shape) != shape:
            raise ConfigError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        noise = noise.to(device=device, dtype=torch.float32)

        # The step noise of eta > 0 is drawn on the model's device, from the same seed.
        step_generator = torch.Generator(device=device).manual_seed(int(seed))
        was_training = denoiser.training
        denoiser.eval()
        try:
            with torch.autocast(device.type, enabled=False):  # float32 even inside a mixed-precision trainer
                text = None
                if captions is not None:
                    if self.text_encoder is None:
                        raise ConfigError("this checkpoint has no text encoder, so it cannot take captions; "
                                          "sample with captions=null")
                    text = self.text_encoder.encode(captions).to(device=device, dtype=torch.float32)  # (B, 77, w)
                if exp is not None:
                    exp = exp.to(device)  # (B, 50)

                def model_fn(x, t):  # (B, T, D), (B,) -> guided prediction (B, T, D)
                    return denoiser.guided(x, t, text, exp, cond_scale=options["cond_scale"],
                                           text_scale=options["text_scale"], exp_scale=options["exp_scale"])

                codes = self.diffusion.ddim_sample(model_fn, shape, steps=options["steps"], eta=options["eta"],
                                                   clamp=options["clamp"], noise=noise, generator=step_generator,
                                                   progress=progress)
        finally:
            denoiser.train(was_training)
        return codes.float()

    def __call__(self, captions: str | Sequence[str] | None = None, exp=None, *, num_samples: int | None = None,
                 seed: int = 0, progress: bool = False, **sampling) -> SCDOutput:
        """Sample codes for the conditions (see :meth:`sample`) and render them at the frontal camera.

        ``num_samples`` defaults to the number of captions given (1 for a single caption or none).
        """
        if num_samples is None:
            num_samples = len(captions) if isinstance(captions, (list, tuple)) else 1
        codes = self.sample(captions, exp, num_samples=num_samples, seed=seed, progress=progress, **sampling).cpu()
        images = None if self.renderer is None else self.renderer.render(codes)
        exp = prepare_exp(exp, num_samples, exp_dim=self.denoiser.config["exp_dim"])
        conditions = {"captions": prepare_captions(captions, num_samples),
                      "exp": None if exp is None else exp.tolist(), "num_samples": num_samples, "seed": seed,
                      **self.sampling_options(**sampling)}
        return SCDOutput(codes=codes, images=images, conditions=conditions)

    def interpolate(self, caption_a: str, caption_b: str, *, num_samples: int = 1, exp=None, seed: int = 0,
                    progress: bool = False, **sampling) -> tuple[Tensor, Tensor]:
        """Codes (N, T, D) for two captions sampled from the SAME initial noise (and expression), on the CPU: the
        two ends of a morph."""
        shape = (num_samples, self.denoiser.config["n_tokens"], self.denoiser.config["code_dim"])
        noise = initial_noise(*shape, seed=seed)
        a, b = (self.sample(caption, exp, num_samples=num_samples, seed=seed, noise=noise, progress=progress,
                            **sampling).cpu() for caption in (caption_a, caption_b))
        return a, b
