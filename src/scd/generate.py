"""Text/expression -> 3D faces: sample W+ codes with the SCD and render them with the EG3D generator.

``python -m scd.generate captions='["This man has a beard."]' exp=path.npy seed=0 num_samples=4`` writes into
the run folder (or ``out_dir=``):

- ``grid.png`` and ``sample_XX.png``: each code rendered at the frontal camera (yaw = pitch = pi/2, the FFHQ
  pivot, radius and focal length), ``noise_mode=const``, like the official ``infer.py``;
- ``latents.pt``: the codes, a plain float32 tensor (N, 14, 512) saved with ``torch.save`` (the official
  ``output.pt``), and ``conditions.json``: everything needed to reproduce them;
- with ``video=true``, ``orbit_XX.mp4``: the official ``gen_videos`` camera orbit of each code, in
  ``video_mode`` = image | image_depth | image_raw, with ``video_depth_mult`` times the depth samples.

Other modes: ``latents=file.pt`` renders saved codes (no diffusion); ``interpolate='["A", "B"]'`` samples
codes for two captions from the same initial noise and writes a morph video per sample (``morph_XX.mp4``) that
slerps each W+ token from the first code to the second. Conditions select the guidance: captions and ``exp``
(the paper), one of them (``captions=null`` for expression-only), or neither (unconditional).

Bad requests (missing or malformed checkpoint, bad expression or latents file, empty caption list, odd
options) end with a one-line error and exit code 2; nothing is written to the output folder then.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm import tqdm

from eg3d.camera import orbit_labels
from eg3d.checkpoint import CheckpointError
from eg3d.render import frontal_labels, render_uint8
from eg3d.video import save_png, tile, write_mp4
from scd.checkpoint import DEFAULT_SAMPLING, load_scd
from scd.sampling import initial_noise, prepare_captions, prepare_expressions, sample_codes, slerp

DEMO_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "demo"
VIDEO_MODES = ("image", "image_depth", "image_raw")
NOISE_MODES = ("const", "random", "none")
KEYFRAMES = 5  # columns of the preview grid of a caption interpolation


class GenerateError(ValueError):
    """A bad generation request; the CLI prints it as one line and exits non-zero."""


# ----------------------------------------------------------------------------------------------- inputs

SAMPLING_KEYS = ("cond_scale", "text_scale", "exp_scale", "steps", "eta", "clamp")


def _int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise GenerateError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _number(name: str, value, *, optional: bool = False, minimum: float | None = None) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GenerateError(f"{name} must be a number{' or null' if optional else ''}, got {value!r}")
    if minimum is not None and value < minimum:
        raise GenerateError(f"{name} must be >= {minimum}, got {value!r}")
    return float(value)


def _clamp(value) -> tuple[float, float] | bool:
    """``false`` (no clamp) or [low, high] -> False or (low, high)."""
    if value is False:
        return False
    value = list(value) if isinstance(value, (ListConfig, list, tuple)) else value
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            or not value[0] < value[1]):
        raise GenerateError(f"clamp must be [low, high] with low < high, or false for no clamp, got "
                            f"{value!r}")
    return float(value[0]), float(value[1])


def check_sampling(values: dict) -> dict:
    """Validate the sampling options (cond_scale, text_scale, exp_scale, steps, eta, clamp); None (not given)
    stays None, clamp ``false`` (no clamp) becomes False."""
    checks = {"cond_scale": lambda v: _number("cond_scale", v),
              "text_scale": lambda v: _number("text_scale", v, optional=True),
              "exp_scale": lambda v: _number("exp_scale", v, optional=True),
              "steps": lambda v: _int("steps", v, 1), "eta": lambda v: _number("eta", v, minimum=0.0),
              "clamp": _clamp}
    return {k: None if values[k] is None and k not in ("text_scale", "exp_scale") else checks[k](values[k])
            for k in SAMPLING_KEYS}


def check_options(cfg: DictConfig) -> dict:
    """Validate the plain options of ``cfg`` (not the files it names); return them as Python values.

    Sampling options that are null stay None here: they come from the checkpoint (``resolve_sampling``)."""
    opts = {name: _int(name, cfg[name], minimum) for name, minimum in [
        ("num_samples", 1), ("seed", 0), ("video_frames", 1), ("interp_frames", 2), ("render_batch", 1),
        ("grid_cols", 1), ("video_depth_mult", 1)]}
    opts |= check_sampling({k: cfg[k] for k in SAMPLING_KEYS})
    opts["video_fps"] = _number("video_fps", cfg.video_fps, minimum=1.0)
    if cfg.video_mode not in VIDEO_MODES:
        raise GenerateError(f"video_mode must be one of {', '.join(VIDEO_MODES)}, got {cfg.video_mode!r}")
    if cfg.noise_mode not in NOISE_MODES:
        raise GenerateError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {cfg.noise_mode!r}")
    interpolate = cfg.interpolate
    if interpolate is not None:
        interpolate = list(interpolate) if isinstance(interpolate, ListConfig) else interpolate
        if not isinstance(interpolate, list) or len(interpolate) != 2 or not all(
                isinstance(c, str) for c in interpolate):
            raise GenerateError(f"interpolate must be a list of two captions, got {interpolate!r}")
        if cfg.latents is not None:
            raise GenerateError("interpolate= samples new codes and cannot be combined with latents=")
    opts["interpolate"] = interpolate
    try:
        opts["device"] = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                                      else "cpu" if cfg.device == "auto" else cfg.device)
    except (RuntimeError, TypeError) as err:
        raise GenerateError(f"device must be auto, cpu or cuda[:N], got {cfg.device!r} ({err})") from None
    if opts["device"].type == "cuda" and not torch.cuda.is_available():
        raise GenerateError(f"device={cfg.device} but no CUDA device is available; use device=cpu")
    return opts


def resolve_sampling(opts: dict, bundle) -> dict:
    """The sampling options: those given, else the checkpoint's ``sampling`` defaults, else the paper's."""
    stored = {**DEFAULT_SAMPLING, **bundle.config.get("sampling", {})}
    stored["clamp"] = False if stored.get("clamp") is None else stored["clamp"]
    try:
        stored = check_sampling({k: stored.get(k) for k in SAMPLING_KEYS})
    except GenerateError as err:
        raise CheckpointError(f"the checkpoint's sampling defaults are invalid: {err}") from None
    given = {k: opts[k] for k in SAMPLING_KEYS}
    if given["text_scale"] is not None or given["exp_scale"] is not None or given["cond_scale"] is not None:
        stored["text_scale"] = stored["exp_scale"] = None  # asking for guidance replaces the stored guidance
    resolved = {k: stored[k] if given[k] is None else given[k] for k in SAMPLING_KEYS}
    resolved["clamp"] = resolved["clamp"] or None  # False (no clamp) -> None, as the sampler takes it
    if resolved["steps"] > bundle.diffusion.num_timesteps:
        raise GenerateError(f"steps must be <= the checkpoint's {bundle.diffusion.num_timesteps} diffusion "
                            f"timesteps, got {resolved['steps']}")
    return resolved


def captions_option(captions, num_samples: int) -> list[str] | None:
    """The ``captions`` option as one caption per sample (None: no text)."""
    if isinstance(captions, ListConfig):
        captions = list(captions)
    try:
        return prepare_captions(captions, num_samples)
    except ValueError as err:
        raise GenerateError(str(err)) from None


def load_expression_file(path: str | os.PathLike, num_samples: int, *, exp_dim: int = 50) -> torch.Tensor:
    """Expression codes (num_samples, exp_dim) from a .npy file of shape (exp_dim,) or (N, exp_dim)."""
    path = Path(path)
    if not path.is_file():
        raise GenerateError(f"expression file not found: {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise GenerateError(f"expression file {path} is not a readable .npy array ({err})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise GenerateError(f"expression file {path} is an .npz archive; save one array with numpy.save "
                            f"(.npy)")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise GenerateError(f"expression file {path} holds {array.dtype} data, expected numbers")
    try:
        return prepare_expressions(array, num_samples, exp_dim=exp_dim)
    except ValueError as err:
        raise GenerateError(f"bad expression file {path}: {err}") from None


def load_latents_file(path: str | os.PathLike) -> torch.Tensor:
    """Codes (N, T, D) float32 from a tensor saved with ``torch.save`` (a single (T, D) code is accepted)."""
    path = Path(path)
    if not path.is_file():
        raise GenerateError(f"latents file not found: {path}")
    try:
        latents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for foreign or corrupt files: all mean unreadable
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GenerateError(f"latents file {path} is not a tensor saved with torch.save ({reason})") from None
    if not isinstance(latents, torch.Tensor):
        raise GenerateError(f"latents file {path} holds a {type(latents).__name__}; expected a tensor "
                            f"(N, 14, 512)")
    if latents.ndim == 2:
        latents = latents[None]
    if latents.ndim != 3 or latents.shape[0] < 1 or not latents.is_floating_point():
        raise GenerateError(f"latents file {path} holds a {latents.dtype} tensor of shape "
                            f"{tuple(latents.shape)}; expected float codes (N, 14, 512)")
    if not torch.isfinite(latents).all():
        raise GenerateError(f"latents file {path} contains NaN or inf")
    return latents.float()


def resolve_checkpoint(ckpt: str | None) -> Path:
    """The SCD checkpoint directory: ``ckpt``, or the demo checkpoint shipped in the scd package when None."""
    if ckpt is not None:
        return Path(ckpt)
    if not DEMO_CHECKPOINT.exists():
        raise GenerateError(f"no ckpt= given and the demo checkpoint is missing ({DEMO_CHECKPOINT}); "
                            f"pass ckpt=<SCD checkpoint directory>")
    return DEMO_CHECKPOINT


def load_checkpoint(path: Path, *, use_ema: bool, device: torch.device):
    """The SCD bundle at ``path`` on ``device``; CheckpointError if it is missing or malformed."""
    if not path.exists():
        raise CheckpointError(f"SCD checkpoint not found: {path}")
    if path.is_file():
        raise CheckpointError(f"{path} is a file, but an SCD checkpoint is a directory; convert an official "
                              f"model.pt with `python -m scd.convert {path} OUT_DIR` and pass ckpt=OUT_DIR")
    return load_scd(path, map_location=device, use_ema=use_ema)


def build_generator(generator_cfg: DictConfig, device: torch.device):
    """The generator of the ``generator`` config group, in eval mode on ``device``; its errors on one line."""
    if OmegaConf.is_missing(generator_cfg, "ckpt"):  # e.g. generator=ffhq512 without generator.ckpt=
        raise GenerateError("this generator config needs weights: pass generator.ckpt=PATH (a texface "
                            "checkpoint directory, an official EG3D .pkl or TEx-Face's .pth)")
    try:
        G = hydra.utils.instantiate(generator_cfg)
    except hydra.errors.InstantiationException as err:
        if isinstance(err.__cause__, CheckpointError):
            raise CheckpointError(f"cannot load the generator: {err.__cause__}") from None
        if isinstance(err.__cause__, ValueError):
            raise GenerateError(f"cannot build the generator: {err.__cause__}") from None
        raise
    return G.to(device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------- rendering

def render_frames(G, ws: torch.Tensor, c: torch.Tensor, *, mode: str, noise_mode: str, deterministic: bool,
                  batch: int, desc: str, progress: bool) -> Iterator[np.ndarray]:
    """Render codes ws (B, 14, 512) from cameras c (B, 25) ``batch`` at a time; yield uint8 frames (H, W, 3).

    ``image_depth`` comes out as the official gen_videos shows it: negated (near = bright), min-max scaled per
    frame.
    """
    with tqdm(total=ws.shape[0], desc=desc, unit="frame", disable=not progress, leave=False) as bar:
        for start in range(0, ws.shape[0], batch):
            frames = render_uint8(G, ws[start:start + batch], c[start:start + batch], image_mode=mode,
                                  noise_mode=noise_mode, deterministic=deterministic)
            bar.update(len(frames))
            yield from frames


@contextmanager
def more_depth_samples(G, mult: int):
    """Temporarily multiply the generator's coarse and importance depth samples per ray by ``mult``."""
    saved = G.rendering_kwargs
    G.rendering_kwargs = dict(saved, depth_resolution=saved["depth_resolution"] * mult,
                              depth_resolution_importance=saved["depth_resolution_importance"] * mult)
    try:
        yield
    finally:
        G.rendering_kwargs = saved


@contextmanager
def staging(out_dir: Path) -> Iterator[Path]:
    """A hidden folder inside ``out_dir`` to write into; its files move into ``out_dir`` if all goes well."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".generate-", dir=out_dir))
    try:
        yield stage
        for file in sorted(stage.iterdir()):
            os.replace(file, out_dir / file.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- generate

def generate(cfg: DictConfig) -> dict:
    """Sample (or load) W+ codes and render them as ``cfg`` says (see conf/generate.yaml).

    Returns ``{'out_dir': Path, 'files': list[Path], 'latents': Tensor on the CPU, 'conditions': dict}``, the
    latents being (N, 14, 512), or (N, 2, 14, 512) for the two ends of a caption interpolation. Raises
    GenerateError or CheckpointError for a bad request, before anything is written.
    """
    opts = check_options(cfg)
    device, n = opts["device"], opts["num_samples"]
    conditions = {"seed": opts["seed"], "noise_mode": cfg.noise_mode,
                  "camera": "frontal (yaw = pitch = pi/2)",
                  "generator": OmegaConf.to_container(cfg.generator, resolve=True)}

    # Everything that can fail on user input is checked before anything is computed or written.
    bundle = latents = exps = captions = sampling = None
    if cfg.latents is not None:
        latents = load_latents_file(cfg.latents)  # (N, T, D)
        conditions |= {"source": "latents", "latents_file": str(Path(cfg.latents).resolve())}
    else:
        captions = None if opts["interpolate"] else captions_option(cfg.captions, n)
        ckpt = resolve_checkpoint(cfg.ckpt)
        bundle = load_checkpoint(ckpt, use_ema=cfg.use_ema, device=device)
        sampling = resolve_sampling(opts, bundle)
        if cfg.exp is not None:
            exps = load_expression_file(cfg.exp, n, exp_dim=bundle.denoiser.config["exp_dim"])
        if bundle.text_encoder is None and (captions is not None or opts["interpolate"]):
            raise GenerateError(f"checkpoint {ckpt} has no text encoder, so it cannot take captions; use "
                                f"captions=null")
        conditions |= {
            "source": "interpolate" if opts["interpolate"] else "sampled", "ckpt": str(ckpt.resolve()),
            "use_ema": bool(cfg.use_ema), "num_samples": n, "captions": captions,
            "interpolate": opts["interpolate"],
            "exp_file": None if cfg.exp is None else str(Path(cfg.exp).resolve()),
            "exp": None if exps is None else exps.tolist(), **sampling}
    G = build_generator(cfg.generator, device)
    code_shape = (G.num_ws, G.w_dim)
    if latents is not None and tuple(latents.shape[1:]) != code_shape:
        raise GenerateError(f"latents file {cfg.latents} holds codes of shape {tuple(latents.shape)}; this "
                            f"generator takes (N, {code_shape[0]}, {code_shape[1]})")
    if bundle is not None:
        sampled_shape = (bundle.denoiser.config["n_tokens"], bundle.denoiser.config["code_dim"])
        if sampled_shape != code_shape:
            raise GenerateError(f"the checkpoint samples codes of shape {sampled_shape} but the generator "
                                f"takes {code_shape}")
        sampling["seed"] = opts["seed"]

    render_opts = {"noise_mode": cfg.noise_mode, "deterministic": bool(cfg.deterministic),
                   "batch": opts["render_batch"], "progress": cfg.progress}
    out_dir = Path(cfg.out_dir)
    names: list[str] = []
    # The random parts of rendering (ray jitter, noise_mode=random) are seeded too, in a forked RNG so that
    # the caller's is left alone; sampling draws from its own generators.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), staging(out_dir) as stage:
        if opts["interpolate"]:
            noise = initial_noise(n, *code_shape, seed=opts["seed"])  # the SAME start for both captions
            ends = [sample_codes(bundle, caption, exps, num_samples=n, noise=noise, progress=cfg.progress,
                                 **sampling).cpu() for caption in opts["interpolate"]]  # 2 x (N, T, D)
            for tag, codes in zip("ab", ends):
                torch.save(codes.contiguous(), stage / f"latents_{tag}.pt")
                names.append(f"latents_{tag}.pt")
            latents = torch.stack(ends, dim=1)  # (N, 2, T, D)
            torch.manual_seed(opts["seed"])
            names += _write_morphs(G, latents, stage, opts, cfg, render_opts)
        else:
            if latents is None:
                latents = sample_codes(bundle, captions, exps, num_samples=n, progress=cfg.progress,
                                       **sampling).cpu()  # (N, T, D)
            torch.manual_seed(opts["seed"])
            names += _write_stills(G, latents, stage, opts, render_opts)
            if cfg.video:
                names += _write_orbits(G, latents, stage, opts, cfg, render_opts)
        (stage / "conditions.json").write_text(json.dumps(conditions, indent=2))
        names.append("conditions.json")

    files = [out_dir / name for name in names]
    _report(out_dir, names)
    return {"out_dir": out_dir, "files": files, "latents": latents, "conditions": conditions}


def _write_stills(G, latents, stage: Path, opts: dict, render_opts: dict) -> list[str]:
    """grid.png, sample_XX.png (frontal camera) and latents.pt."""
    device = opts["device"]
    ws = latents.to(device)
    frames = list(render_frames(G, ws, frontal_labels(G, len(ws), device), mode="image", desc="render",
                                **render_opts))
    names = []
    for i, frame in enumerate(frames):
        save_png(frame, stage / f"sample_{i:02d}.png")
        names.append(f"sample_{i:02d}.png")
    save_png(tile(np.stack(frames), min(opts["grid_cols"], len(frames))), stage / "grid.png")
    torch.save(latents.contiguous(), stage / "latents.pt")
    return ["grid.png", *names, "latents.pt"]


def _write_orbits(G, latents, stage: Path, opts: dict, cfg: DictConfig, render_opts: dict) -> list[str]:
    """orbit_XX.mp4: the official gen_videos orbit of each code, with more depth samples."""
    device, n_frames = opts["device"], opts["video_frames"]
    cameras = orbit_labels(n_frames).to(device)  # (F, 25)
    names = []
    with more_depth_samples(G, opts["video_depth_mult"]):
        for i, code in enumerate(latents.to(device)):
            frames = render_frames(G, code.expand(n_frames, *code.shape), cameras, mode=cfg.video_mode,
                                   desc=f"orbit {i + 1}/{len(latents)}", **render_opts)
            write_mp4(frames, stage / f"orbit_{i:02d}.mp4", fps=opts["video_fps"])
            names.append(f"orbit_{i:02d}.mp4")
    return names


def _write_morphs(G, ends: torch.Tensor, stage: Path, opts: dict, cfg: DictConfig,
                  render_opts: dict) -> list[str]:
    """morph_XX.mp4 (slerp from the first caption's code to the second's, ends (N, 2, T, D)) and grid.png with
    KEYFRAMES evenly spaced frames of each morph, one row per sample."""
    device, n_frames = opts["device"], opts["interp_frames"]
    cameras = orbit_labels(n_frames).to(device) if cfg.interp_orbit else frontal_labels(G, n_frames, device)
    names = []

    def path(a, b, ts):  # (len(ts), T, D)
        return torch.stack([slerp(a, b, float(t)) for t in ts]).to(device)

    keyframes = torch.cat([path(a, b, torch.linspace(0, 1, KEYFRAMES)) for a, b in ends])  # (N * K, T, D)
    stills = list(render_frames(G, keyframes, frontal_labels(G, len(keyframes), device), mode="image",
                                desc="keyframes", **render_opts))
    save_png(tile(np.stack(stills), KEYFRAMES), stage / "grid.png")
    with more_depth_samples(G, opts["video_depth_mult"]):
        for i, (a, b) in enumerate(ends):
            morph = path(a, b, torch.linspace(0, 1, n_frames))  # (F, T, D)
            frames = render_frames(G, morph, cameras, mode=cfg.video_mode, desc=f"morph {i + 1}/{len(ends)}",
                                   **render_opts)
            write_mp4(frames, stage / f"morph_{i:02d}.mp4", fps=opts["video_fps"])
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


@hydra.main(version_base="1.3", config_path="../../conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    try:
        generate(cfg)
    except (GenerateError, CheckpointError) as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
