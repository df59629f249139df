"""Text/expression -> 3D faces: ``python -m scd.generate captions='["This man has a beard."]' exp=path.npy``.

A thin command over :class:`scd.pipeline.SCDPipeline`. It writes into the run folder (or ``out_dir=``):

- ``grid.png`` and ``sample_XX.png``: each code rendered at the frontal camera (yaw = pitch = pi/2, the FFHQ
  pivot, radius and focal length), ``noise_mode=const``, like the official ``infer.py``;
- ``latents.pt``: the codes, a plain float32 tensor (N, 14, 512) saved with ``torch.save`` (the official
  ``output.pt``), and ``conditions.json``: everything needed to reproduce them;
- with ``video=true``: ``orbit.mp4``, all codes in one grid video (as the official gen_videos lays N codes out),
  and ``orbit_XX.mp4`` per code, the official orbit in ``video_mode`` = image | image_depth | image_raw with
  ``video_depth_mult`` times the depth samples; every frame is rendered once for all of them, the tri-planes of
  each code once for the whole orbit.

Other modes: ``latents=file.pt`` renders saved codes (no diffusion); ``interpolate='["A", "B"]'`` samples
codes for two captions from the same initial noise and writes a morph video per sample (``morph_XX.mp4``) that
slerps each W+ token from the first code to the second. Conditions select the guidance: captions and ``exp``
(the paper), one of them (``captions=null`` for expression-only), or neither (unconditional).

Bad requests (missing or malformed checkpoint, bad expression or latents file, empty caption list, odd
options) end with a one-line error and exit code 2; nothing is written to the output folder then.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from eg3d.checkpoint import generator_from_config
from eg3d.frames import IMAGE_MODES, NOISE_MODES, FrameRenderer, morph_codes
from scd.pipeline import SCDPipeline
from scd.sampling import SAMPLING_KEYS, check_sampling, prepare_captions, prepare_exp
from texface.atomic import staging
from texface.cli import hydra_command
from texface.device import resolve_device
from texface.errors import CheckpointError, ConfigError
from texface.media import save_png, tile
from texface.options import check_choice, check_int, check_number

KEYFRAMES = 5  # columns of the preview grid of a caption interpolation


# ----------------------------------------------------------------------------------------------- inputs

def check_options(cfg: DictConfig) -> dict:
    """Validate the plain options of ``cfg`` (not the files it names); return them as Python values.

    Sampling options that are null stay None here: they come from the checkpoint
    (:meth:`SCDPipeline.sampling_options`)."""
    opts = {name: check_int(name, cfg[name], minimum) for name, minimum in [
        ("num_samples", 1), ("seed", 0), ("video_frames", 1), ("interp_frames", 2), ("render_batch", 1),
        ("grid_cols", 1), ("video_depth_mult", 1)]}
    opts |= check_sampling({k: cfg[k] for k in SAMPLING_KEYS})
    opts["video_fps"] = check_number("video_fps", cfg.video_fps, minimum=1.0)
    check_choice("video_mode", cfg.video_mode, IMAGE_MODES)
    check_choice("noise_mode", cfg.noise_mode, NOISE_MODES)
    interpolate = cfg.interpolate
    if interpolate is not None:
        interpolate = list(interpolate) if isinstance(interpolate, ListConfig) else interpolate
        if not isinstance(interpolate, list) or len(interpolate) != 2 or not all(
                isinstance(c, str) for c in interpolate):
            raise ConfigError(f"interpolate must be a list of two captions, got {interpolate!r}")
        if cfg.latents is not None:
            raise ConfigError("interpolate= samples new codes and cannot be combined with latents=")
    opts["interpolate"] = interpolate
    return opts


def load_exp_file(path: str | os.PathLike, num_samples: int, *, exp_dim: int = 50) -> torch.Tensor:
    """Expression codes (num_samples, exp_dim) from a .npy file of shape (exp_dim,) or (N, exp_dim)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"expression file not found: {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ConfigError(f"expression file {path} is not a readable .npy array ({err})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise ConfigError(f"expression file {path} is an .npz archive; save one array with numpy.save (.npy)")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ConfigError(f"expression file {path} holds {array.dtype} data, expected numbers")
    try:
        return prepare_exp(array, num_samples, exp_dim=exp_dim)
    except ConfigError as err:
        raise ConfigError(f"bad expression file {path}: {err}") from None


def load_latents_file(path: str | os.PathLike) -> torch.Tensor:
    """Codes (N, T, D) float32 from a tensor saved with ``torch.save`` (a single (T, D) code is accepted)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"latents file not found: {path}")
    try:
        latents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for foreign or corrupt files: all mean unreadable
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"latents file {path} is not a tensor saved with torch.save ({reason})") from None
    if not isinstance(latents, torch.Tensor):
        raise ConfigError(f"latents file {path} holds a {type(latents).__name__}; expected a tensor (N, 14, 512)")
    if latents.ndim == 2:
        latents = latents[None]
    if latents.ndim != 3 or latents.shape[0] < 1 or not latents.is_floating_point():
        raise ConfigError(f"latents file {path} holds a {latents.dtype} tensor of shape {tuple(latents.shape)}; "
                          f"expected float codes (N, 14, 512)")
    if not torch.isfinite(latents).all():
        raise ConfigError(f"latents file {path} contains NaN or inf")
    return latents.float()


# ----------------------------------------------------------------------------------------------- generate

def generate(cfg: DictConfig) -> dict:
    """Sample (or load) W+ codes and render them as ``cfg`` says (see conf/generate.yaml).

    Returns ``{'out_dir': Path, 'files': list[Path], 'latents': Tensor on the CPU, 'conditions': dict}``, the
    latents being (N, 14, 512), or (N, 2, 14, 512) for the two ends of a caption interpolation. Raises
    ConfigError or CheckpointError for a bad request, before anything is written.
    """
    opts = check_options(cfg)
    device, n, seed = resolve_device(cfg.device), opts["num_samples"], opts["seed"]
    given = {k: opts[k] for k in SAMPLING_KEYS}
    conditions = {"seed": seed, "noise_mode": cfg.noise_mode, "camera": "frontal (yaw = pitch = pi/2)",
                  "generator": OmegaConf.to_container(cfg.generator, resolve=True)}
    render_options = {"precision": cfg.precision, "compile": cfg.compile, "noise_mode": cfg.noise_mode,
                      "deterministic": bool(cfg.deterministic), "batch_size": opts["render_batch"],
                      "progress": bool(cfg.progress)}

    # Everything that can fail on user input is checked before anything is computed or written.
    try:
        G = generator_from_config(cfg.generator).to(device)
    except CheckpointError as err:
        raise CheckpointError(f"cannot load the generator: {err}") from None
    pipe = latents = exp = captions = None
    if cfg.latents is not None:
        latents = load_latents_file(cfg.latents)  # (N, T, D)
        if tuple(latents.shape[1:]) != (G.num_ws, G.w_dim):
            raise ConfigError(f"latents file {cfg.latents} holds codes of shape {tuple(latents.shape)}; this "
                              f"generator takes (N, {G.num_ws}, {G.w_dim})")
        renderer = FrameRenderer(G, **render_options)
        conditions |= {"source": "latents", "latents_file": str(Path(cfg.latents).resolve())}
    else:
        pipe = SCDPipeline.from_pretrained(cfg.ckpt, generator=G, device=device, use_ema=cfg.use_ema,
                                           **render_options)
        renderer = pipe.renderer
        captions = None if opts["interpolate"] else prepare_captions(cfg.captions, n)
        if cfg.exp is not None:
            exp = load_exp_file(cfg.exp, n, exp_dim=pipe.denoiser.config["exp_dim"])
        if pipe.text_encoder is None and (captions is not None or opts["interpolate"]):
            raise ConfigError("this SCD checkpoint has no text encoder, so it cannot take captions; use "
                              "captions=null")
        conditions |= {
            "source": "interpolate" if opts["interpolate"] else "sampled", "ckpt": str(pipe.source),
            "use_ema": bool(cfg.use_ema), "num_samples": n, "captions": captions,
            "interpolate": opts["interpolate"],
            "exp_file": None if cfg.exp is None else str(Path(cfg.exp).resolve()),
            "exp": None if exp is None else exp.tolist(), **pipe.sampling_options(**given)}

    out_dir = Path(cfg.out_dir)
    names: list[str] = []
    # The random parts of rendering (ray jitter, noise_mode=random) are seeded too, in a forked RNG so that
    # the caller's is left alone; sampling draws from its own generators.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), staging(out_dir) as stage:
        if opts["interpolate"]:
            a, b = pipe.interpolate(*opts["interpolate"], num_samples=n, exp=exp, seed=seed,
                                    progress=cfg.progress, **given)  # the SAME start noise for both captions
            for tag, codes in zip("ab", (a, b)):
                torch.save(codes.contiguous(), stage / f"latents_{tag}.pt")
                names.append(f"latents_{tag}.pt")
            latents = torch.stack([a, b], dim=1)  # (N, 2, T, D)
            torch.manual_seed(seed)
            names += _write_morphs(renderer, a, b, stage, opts, cfg)
        else:
            if latents is None:
                latents = pipe.sample(captions, exp, num_samples=n, seed=seed, progress=cfg.progress,
                                      **given).cpu()  # (N, T, D)
            torch.manual_seed(seed)
            names += _write_stills(renderer, latents, stage, opts)
            if cfg.video:
                names += _write_orbits(renderer, latents, stage, opts, cfg)
        (stage / "conditions.json").write_text(json.dumps(conditions, indent=2))
        names.append("conditions.json")

    files = [out_dir / name for name in names]
    _report(out_dir, names)
    return {"out_dir": out_dir, "files": files, "latents": latents, "conditions": conditions}


def _write_stills(renderer: FrameRenderer, latents, stage: Path, opts: dict) -> list[str]:
    """grid.png, sample_XX.png (frontal camera) and latents.pt."""
    frames = renderer.render(latents)
    names = []
    for i, frame in enumerate(frames):
        save_png(frame, stage / f"sample_{i:02d}.png")
        names.append(f"sample_{i:02d}.png")
    save_png(tile(frames, min(opts["grid_cols"], len(frames))), stage / "grid.png")
    torch.save(latents.contiguous(), stage / "latents.pt")
    return ["grid.png", *names, "latents.pt"]


def _write_orbits(renderer: FrameRenderer, latents, stage: Path, opts: dict, cfg: DictConfig) -> list[str]:
    """orbit.mp4 (all codes in a grid) and orbit_XX.mp4 (one per code), from one pass over the frames."""
    each = [f"orbit_{i:02d}.mp4" for i in range(len(latents))]
    renderer.orbit_video(latents, stage / "orbit.mp4", each=[stage / name for name in each],
                         fps=opts["video_fps"], cameras=opts["video_frames"], depth_mult=opts["video_depth_mult"],
                         image_mode=cfg.video_mode)
    return ["orbit.mp4", *each]


def _write_morphs(renderer: FrameRenderer, a: torch.Tensor, b: torch.Tensor, stage: Path, opts: dict,
                  cfg: DictConfig) -> list[str]:
    """morph_XX.mp4 (slerp from the first caption's code a (N, T, D) to the second's) and grid.png with
    KEYFRAMES evenly spaced frames of each morph, one row per sample."""
    keyframes = torch.cat([morph_codes(x, y, KEYFRAMES) for x, y in zip(a, b)])  # (N * K, T, D)
    save_png(tile(renderer.render(keyframes), KEYFRAMES), stage / "grid.png")
    names = []
    for i, (x, y) in enumerate(zip(a, b)):
        renderer.morph_video(x, y, stage / f"morph_{i:02d}.mp4", frames=opts["interp_frames"],
                             orbit=bool(cfg.interp_orbit), fps=opts["video_fps"],
                             depth_mult=opts["video_depth_mult"], image_mode=cfg.video_mode)
        names.append(f"morph_{i:02d}.mp4")
    return ["grid.png", *names]


def _report(out_dir: Path, names: list[str]) -> None:
    """Tell the user where the outputs went, one line per kind of file."""
    kinds: dict[str, list[str]] = {}
    for name in names:
        kinds.setdefault(name.split("_")[0].split(".")[0], []).append(name)
    print(f"outputs in {out_dir.resolve()}:")
    for kind, group in kinds.items():
        print(f"  {kind}: {group[0]}" + (f" ... {group[-1]} ({len(group)} files)" if len(group) > 1 else ""))


main = hydra_command("generate", generate)

if __name__ == "__main__":
    main()
