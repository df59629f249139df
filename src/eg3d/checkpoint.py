"""EG3D generator checkpoints: our directory format, official network pickles and TEx-Face's state-dict files.

:func:`save_generator` writes a checkpoint directory (:mod:`texface.checkpoint`): ``config.json`` = {format,
format_version, init_kwargs (the official TriPlaneGenerator constructor arguments), neural_rendering_resolution}
and ``model.safetensors`` (the state dict under the official names). :func:`load_generator` also reads official
EG3D network pickles (through :mod:`eg3d.official_pickle`, no pickled code is run) and TEx-Face's
``{'G_ema': state_dict}`` files; :func:`build_generator` is the entry point configs use (``conf/generator/``).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from eg3d.camera import FFHQ_FOCAL, LookAtPoseSampler, camera_labels, intrinsics_from_focal
from eg3d.generator import TriPlaneGenerator
from eg3d.official_pickle import generator_from_pickle
from eg3d.presets import preset as get_preset
from texface.config import instantiate
from texface.checkpoint import (CONFIG_FILE, load_state_strict, load_torch_file, read_config, read_tensors,
                                write_checkpoint)
from texface.errors import CheckpointError, ConfigError

GENERATOR_FORMAT = "texface.eg3d.TriPlaneGenerator"
GENERATOR_FORMAT_VERSION = 1
GENERATOR_TENSORS = "model"
W_AVG_SAMPLES = 1000

log = logging.getLogger(__name__)


def save_generator(G, path: str | os.PathLike, *, dtype: torch.dtype | None = None) -> Path:
    """Write generator ``G`` (its ``init_kwargs``, ``neural_rendering_resolution`` and state dict) to ``path``.

    ``dtype`` (e.g. torch.float16) stores the floating-point tensors in that type (loading casts them back to the
    generator's float32); None keeps them as they are.
    """
    config = {
        "format": GENERATOR_FORMAT,
        "format_version": GENERATOR_FORMAT_VERSION,
        "init_kwargs": G.init_kwargs,
        "neural_rendering_resolution": int(G.neural_rendering_resolution),
    }
    state = G.state_dict()
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return write_checkpoint(path, config, {GENERATOR_TENSORS: state})


def load_generator(path: str | os.PathLike, map_location="cpu"):
    """Load a TriPlaneGenerator (in eval mode) from any of the checkpoint kinds we accept.

    Args:
        path: one of
            - a texface checkpoint directory written by :func:`save_generator`;
            - an official EG3D network pickle (``*.pkl``), read by :mod:`eg3d.convert` without running its code;
            - TEx-Face's ``*.pth``/``*.pt`` = ``{'G_ema': state_dict}`` (read with ``weights_only=True``). It holds
              no constructor arguments, so the ``ffhq512`` preset is assumed (a warning says so).
        map_location: device the generator is moved to.

    Raises:
        CheckpointError: the checkpoint is missing or malformed, or its state dict does not match the generator
            exactly (the message lists missing, unexpected and mis-shaped keys).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        init_kwargs, nrr = _read_generator_config(path)
        state = read_tensors(path, GENERATOR_TENSORS)
    elif path.suffix == ".pkl":
        init_kwargs, nrr, state = generator_from_pickle(path)
    elif path.suffix in (".pth", ".pt"):
        init_kwargs, nrr, state = _read_state_dict_file(path)
    else:
        raise CheckpointError(
            f"{path}: unknown checkpoint kind; expected a texface checkpoint directory, an official EG3D .pkl "
            "or a .pth holding {'G_ema': state_dict}")
    G = instantiate_generator(init_kwargs, nrr, state, source=path)
    return G.to(map_location).eval()


# Generators with trained weights shipped in the package (each folder has a MODEL_CARD.md): preset names that load
# weights instead of drawing random ones.
SHIPPED_GENERATORS = {"world": Path(__file__).resolve().parent / "assets" / "world"}


def build_generator(*, ckpt: str | os.PathLike | None = None, preset: str = "tiny", seed: int = 0,
                    neural_rendering_resolution: int | None = None):
    """The generator every entry point uses: loaded from ``ckpt``, or seeded random weights of a preset.

    Args:
        ckpt: anything :func:`load_generator` accepts; None builds ``preset`` with random weights.
        preset: name in :mod:`eg3d.presets` (``tiny`` | ``ffhq512``: random weights), or ``world`` (the shipped
            face-world generator, SHIPPED_GENERATORS: trained weights); only used when ``ckpt`` is None.
        seed: seed of the random weights (the same seed gives the same generator; the global RNG is untouched).
        neural_rendering_resolution: overrides the resolution of the volume render (e.g. 64 for a fast preview).

    Returns: the generator in eval mode with ``requires_grad`` off.

    With random weights, ``w_avg`` is set to the mean of 1000 mapped random latents (official EG3D initialises it
    to zero and tracks this mean during training), so truncation pulls towards the centre of this generator's W
    space as it does for a trained one.
    """
    if ckpt is not None or preset in SHIPPED_GENERATORS:
        G = load_generator(SHIPPED_GENERATORS[preset] if ckpt is None else ckpt)
    else:
        config = get_preset(preset)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            G = instantiate_generator(config["init_kwargs"], config["neural_rendering_resolution"], None,
                                      source=f"preset {preset!r}")
            _set_w_avg(G)
    if neural_rendering_resolution is not None:
        if int(neural_rendering_resolution) <= 0:
            raise ConfigError(f"neural_rendering_resolution must be positive, got {neural_rendering_resolution}")
        G.neural_rendering_resolution = int(neural_rendering_resolution)
    # How to build it again (plain data): models trained against this generator record it in their checkpoints.
    G.build_config = {"_target_": "eg3d.checkpoint.build_generator", "ckpt": None if ckpt is None else str(ckpt),
                      "preset": preset, "seed": int(seed),
                      "neural_rendering_resolution": None if neural_rendering_resolution is None
                      else int(neural_rendering_resolution)}
    return G.eval().requires_grad_(False)


def default_generator() -> TriPlaneGenerator:
    """The generator every command renders with when none is named (``conf/generator/world.yaml``): the shipped
    face-world generator."""
    return build_generator(preset="world")


def generator_from_config(node) -> TriPlaneGenerator:
    """The generator of a ``conf/generator/`` node (a :func:`build_generator` call), eval mode, no gradients."""
    if not isinstance(node, DictConfig):
        node = OmegaConf.create(node)
    if OmegaConf.is_missing(node, "ckpt"):  # e.g. generator=ffhq512 without weights
        raise ConfigError("this generator config needs a checkpoint: pass generator.ckpt=PATH (a texface checkpoint "
                          "directory, an official EG3D .pkl or TEx-Face's .pth)")
    return instantiate(node)


def _read_generator_config(path: Path) -> tuple[dict, int]:
    config = read_config(path, kind="generator", format=GENERATOR_FORMAT,
                         version=("format_version", GENERATOR_FORMAT_VERSION))
    init_kwargs, nrr = config.get("init_kwargs"), config.get("neural_rendering_resolution")
    if not isinstance(init_kwargs, dict) or not isinstance(nrr, int) or nrr <= 0:
        raise CheckpointError(f"{path / CONFIG_FILE} needs an 'init_kwargs' object and a positive integer "
                              "'neural_rendering_resolution'")
    return init_kwargs, nrr


def _read_state_dict_file(path: Path) -> tuple[dict, int, dict[str, torch.Tensor]]:
    data = load_torch_file(path)
    state = data.get("G_ema") if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold {{'G_ema': state_dict}} (TEx-Face's generator file)")
    log.warning("%s holds only a state dict; assuming the 'ffhq512' generator preset (TEx-Face's FFHQ 512 "
                "EG3D, neural rendering resolution 128)", path)
    config = get_preset("ffhq512")
    return config["init_kwargs"], config["neural_rendering_resolution"], state


def instantiate_generator(init_kwargs: dict, nrr: int, state: dict[str, torch.Tensor] | None, *, source):
    """TriPlaneGenerator(**init_kwargs) with render resolution ``nrr`` and, unless None, ``state`` loaded strictly.

    ``source`` names where the parts came from in error messages (CheckpointError).
    """
    try:
        G = TriPlaneGenerator(**init_kwargs)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{source}: cannot build a TriPlaneGenerator from its init_kwargs: {err}") from None
    G.neural_rendering_resolution = nrr
    if state is not None:
        load_state_strict(G, state, source=source, kind="generator")
    return G


@torch.no_grad()
def _set_w_avg(G) -> None:
    # Condition on the frontal camera, the one our renders condition on.
    pivot, radius = G.rendering_kwargs["avg_camera_pivot"], G.rendering_kwargs["avg_camera_radius"]
    cam2world = LookAtPoseSampler.sample(math.pi / 2, math.pi / 2, pivot, radius=radius)  # (1, 4, 4)
    c = camera_labels(cam2world, intrinsics_from_focal(FFHQ_FOCAL)).expand(W_AVG_SAMPLES, 25)
    z = torch.randn(W_AVG_SAMPLES, G.z_dim)
    G.backbone.mapping.w_avg.copy_(G.mapping(z, c, truncation_psi=1)[:, 0].mean(0))  # (512,)
