"""Convert the released TEx-Face Re-PoI checkpoint into our encoder checkpoint, without running code from it.

    python -m inversion.convert checkpoints.pt OUT [--generator GEN] [--preset ffhq512] [--force]

The official file is ``{'state_dict': {...}, ...}`` (other top-level keys such as ``'opts'`` are ignored), read
with ``torch.load(weights_only=True)`` on the CPU. Its state dict holds the encoder (``backbone.*``,
``cam_proj.*``, ``w_plus_query``, ``pose_mapping.*``, ``residual_encoder.*``, ``pose_mapping_residual.*``, the
rotary ``freqs``) and the frozen EG3D generator it inverts into (``decoder.*``, the G_ema state). A DataParallel
``module.`` prefix is stripped.

- The encoder part is loaded strictly into ``RePoI()`` (the paper's configuration): any missing, unexpected or
  mis-shaped key is an error listing them; the rotary ``freqs`` must equal the constants the constructor computes.
- ``--generator GEN`` (anything :func:`eg3d.checkpoint.load_generator` reads): the ``decoder.*`` tensors must equal
  GEN's state dict (same keys, shapes and values, mapping network and ``w_avg`` included); OUT records GEN's
  absolute path. Without it the decoder is written as a generator checkpoint at ``OUT/generator`` (built from
  ``--preset``'s constructor arguments, its state loaded strictly) and OUT records that relative path.

OUT (``config.json`` + ``model.safetensors`` [+ ``generator/``]) is built in a hidden sibling folder and renamed
into place, so a failure leaves no partial OUT; an existing OUT is only replaced with ``--force``.
"""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from eg3d.checkpoint import instantiate_generator, load_generator, save_generator
from eg3d.presets import preset as get_preset
from inversion.checkpoint import save_encoder
from inversion.encoder import RePoI, RotaryEmbedding
from texface.atomic import atomic_directory
from texface.checkpoint import load_state_strict, load_torch_file, some_keys
from texface.cli import run_main
from texface.errors import ConvertError

DECODER_PREFIX = "decoder."
PARALLEL_PREFIX = "module."
GENERATOR_FOLDER = "generator"
SHOWN = 8  # keys listed in a mismatch message


def load_official(path: str | os.PathLike) -> dict:
    """The official checkpoint ``{'state_dict': {name: tensor}, ...}``, read with ``torch.load(weights_only=True)``."""
    path = Path(path)
    ckpt = load_torch_file(path, error=ConvertError)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        got = sorted(map(str, ckpt))[:SHOWN] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ConvertError(f"{path}: expected the official Re-PoI layout {{'state_dict': {{name: tensor}}, ...}}, "
                           f"got {got}")
    bad = [str(k) for k, v in ckpt["state_dict"].items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ConvertError(f"{path}: 'state_dict' must map names to tensors; not tensors: {some_keys(bad)}")
    return dict(ckpt)


def split_state(state: Mapping[str, Tensor], *, source) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(encoder state, decoder state without its ``decoder.`` prefix), a ``module.`` prefix stripped first."""
    plain: dict[str, Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix(PARALLEL_PREFIX)
        if name in plain:
            raise ConvertError(f"{source}: key {name!r} appears both with and without the {PARALLEL_PREFIX!r} "
                               "prefix")
        plain[name] = value
    encoder = {k: v for k, v in plain.items() if not k.startswith(DECODER_PREFIX)}
    decoder = {k[len(DECODER_PREFIX):]: v for k, v in plain.items() if k.startswith(DECODER_PREFIX)}
    return encoder, decoder


def encoder_from_state(state: dict[str, Tensor], *, source) -> RePoI:
    """``RePoI()`` with ``state`` loaded strictly; the rotary frequencies must be the constructor's constants."""
    encoder = RePoI()
    load_state_strict(encoder, state, source=source, kind="Re-PoI encoder (the paper's configuration)")
    expected = RotaryEmbedding().freqs
    wrong = [k for k, v in state.items() if k.endswith(".freqs")
             and not (v.shape == expected.shape and torch.allclose(v.float(), expected, rtol=1e-6, atol=0))]
    if wrong:
        raise ConvertError(f"{source}: rotary frequencies differ from 1/10000^(2i/512) (the constants the encoder "
                           f"computes): {some_keys(wrong)}")
    return encoder.eval()


def check_decoder(decoder: dict[str, Tensor], generator_state: dict[str, Tensor], *, source, generator) -> None:
    """Raise ConvertError unless ``decoder`` has exactly ``generator_state``'s keys, shapes and values."""
    missing = [k for k in generator_state if k not in decoder]
    unexpected = [k for k in decoder if k not in generator_state]
    shapes = [f"{k} {tuple(decoder[k].shape)} != {tuple(v.shape)}" for k, v in generator_state.items()
              if k in decoder and decoder[k].shape != v.shape]
    values = [k for k, v in generator_state.items() if k in decoder and decoder[k].shape == v.shape
              and not _equal(decoder[k], v)]
    problems = [f"{label} ({len(keys)}): {some_keys(keys)}" for label, keys in
                (("missing from the checkpoint", missing), ("not in the generator", unexpected),
                 ("shape mismatches", shapes), ("different values", values)) if keys]
    if problems:
        raise ConvertError(f"{source}: its decoder.* tensors are not the generator {generator}: "
                           + "; ".join(problems))


def _equal(a: Tensor, b: Tensor) -> bool:
    if a.is_floating_point() and b.is_floating_point():
        return torch.equal(a.float(), b.float())
    return a.dtype == b.dtype and torch.equal(a, b)


def _plain_json(value) -> dict | None:
    """``value`` if it is a JSON object (the official ``opts``), else None."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, generator: str | os.PathLike | None = None,
            preset: str = "ffhq512", overwrite: bool = False) -> str:
    """Convert the official Re-PoI checkpoint ``src`` into the encoder checkpoint ``dst``; return a summary."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        raise ConvertError(f"{dst} already exists; pass --force to replace it")
    gen_path = None if generator is None else Path(generator).resolve()
    if gen_path is not None and gen_path.is_relative_to(dst.resolve()):
        raise ConvertError(f"--generator {generator} lies inside the output {dst}, which is replaced")
    init = get_preset(preset)  # an unknown preset fails before the file is read
    ckpt = load_official(src)
    encoder_state, decoder_state = split_state(ckpt["state_dict"], source=src)
    encoder = encoder_from_state(encoder_state, source=src)

    if gen_path is not None:
        G = load_generator(gen_path)
        if decoder_state:
            check_decoder(decoder_state, G.state_dict(), source=src, generator=gen_path)
            decoder_note = f"its decoder matches {gen_path}"
        else:
            decoder_note = f"it has no decoder.* tensors; using {gen_path}"
        G = None  # recorded by path, not copied
        record_ckpt = str(gen_path)
    else:
        if not decoder_state:
            raise ConvertError(f"{src} holds no decoder.* tensors (the EG3D generator); pass --generator GEN, the "
                               "generator checkpoint the encoder was trained against")
        G = instantiate_generator(init["init_kwargs"], init["neural_rendering_resolution"], decoder_state,
                                  source=f"{src} (decoder.*, preset {preset!r})")
        record_ckpt = GENERATOR_FOLDER
        decoder_note = f"its decoder -> {dst / GENERATOR_FOLDER} (preset {preset!r})"

    build_call = {"_target_": "eg3d.checkpoint.build_generator", "ckpt": record_ckpt, "preset": preset, "seed": 0,
                  "neural_rendering_resolution": None}
    extra = {"converted_from": src.name}
    opts = _plain_json(ckpt.get("opts"))
    if opts is not None:
        extra["official_opts"] = opts
    with atomic_directory(dst) as stage:
        # The encoder first: save_encoder replaces the stage folder as a whole; the generator then goes inside it.
        save_encoder(encoder, stage, generator=build_call, extra=extra)
        if G is not None:
            save_generator(G, stage / GENERATOR_FOLDER)
    n_params = sum(p.numel() for p in encoder.parameters())
    return (f"wrote {dst}: Re-PoI encoder ({n_params / 1e6:.1f}M parameters, {len(encoder_state)} tensors); "
            f"{decoder_note}\nnext: python -m inversion.invert ckpt={dst} image=... camera=...")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inversion.convert",
        description="Convert the released TEx-Face Re-PoI checkpoint (checkpoints.pt) into a texface encoder "
                    "checkpoint; no code from the file is run.")
    parser.add_argument("src", help="official Re-PoI checkpoint ({'state_dict': ..., 'opts': ...})")
    parser.add_argument("dst", help="output encoder checkpoint directory (written atomically)")
    parser.add_argument("--generator", default=None,
                        help="generator checkpoint the decoder.* tensors must equal (a texface checkpoint directory, "
                             "an official EG3D .pkl or TEx-Face's .pth); recorded by absolute path instead of "
                             "writing OUT/generator")
    parser.add_argument("--preset", default="ffhq512",
                        help="generator preset whose constructor arguments the decoder is built with "
                             "(default ffhq512: FFHQ 512 EG3D, neural rendering resolution 128)")
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")
    args = parser.parse_args(argv)
    return run_main(lambda: print(convert(args.src, args.dst, generator=args.generator, preset=args.preset,
                                          overwrite=args.force)))


if __name__ == "__main__":
    raise SystemExit(main())
