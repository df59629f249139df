"""Convert the released TEx-Face SCD checkpoint into our format.

    python -m scd.convert model.pt OUT [--no-ema] [--heads 8] [--force]

The official file is read by :mod:`scd.official` (``torch.load(weights_only=True)``, strict key checks). OUT is
an SCD checkpoint directory (:mod:`scd.checkpoint`) with the official diffusion and sampling settings.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from scd.checkpoint import save_scd
from scd.official import (CLIP_PREFIX, OFFICIAL_DIFFUSION, denoiser_from_official, load_official,
                          split_official_state)
from scd.text import TextEncoder
from texface.cli import run_main
from texface.errors import ConvertError, one_line


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, use_ema: bool = True, heads: int = 8,
            overwrite: bool = False) -> str:
    """Convert ``src`` (official model.pt) into the SCD checkpoint directory ``dst``; return a summary."""
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise ConvertError(f"{dst} already exists; pass --force to replace it")
    ckpt = load_official(src)
    denoiser_state, clip_state = split_official_state(ckpt["state_dict"])
    if not clip_state:
        raise ConvertError(f"{src}: no CLIP text tower ({CLIP_PREFIX}*) in 'state_dict'")
    try:
        text_encoder = TextEncoder.from_openai_state(clip_state)
    except ValueError as err:
        raise ConvertError(f"{src}: the CLIP text tower does not convert: {one_line(err)}") from None
    null_text = text_encoder.null_features()                       # (77, width)
    denoiser = denoiser_from_official(denoiser_state, null_text=null_text, heads=heads)
    ema = None
    if use_ema and ckpt.get("ema") is not None:
        # The EMA copy repeats the frozen CLIP tower (or omits it); the tower from 'state_dict' is used.
        ema = denoiser_from_official(split_official_state(ckpt["ema"])[0], null_text=null_text, heads=heads)
    save_scd(dst, denoiser=denoiser, ema_denoiser=ema, diffusion_config=OFFICIAL_DIFFUSION,
             text_encoder=text_encoder, extra={"converted_from": Path(src).name})
    weights = "raw + EMA weights" if ema is not None else "raw weights only" + (
        " (the source has no 'ema')" if use_ema else " (--no-ema)")
    return (f"wrote {dst}: SCD depth {denoiser.depth}, d {denoiser.dim}, {weights}; CLIP text tower "
            f"{text_encoder.config['num_hidden_layers']} layers, width {text_encoder.width}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scd.convert",
                                     description="Convert the released TEx-Face SCD checkpoint.")
    parser.add_argument("src", help="official model.pt ({'state_dict', 'ema'})")
    parser.add_argument("dst", help="output SCD checkpoint directory")
    parser.add_argument("--no-ema", action="store_true", help="convert only the raw weights")
    parser.add_argument("--heads", type=int, default=8,
                        help="attention heads of the official model (default 8)")
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")
    args = parser.parse_args(argv)
    return run_main(lambda: print(convert(args.src, args.dst, use_ema=not args.no_ema, heads=args.heads,
                                          overwrite=args.force)))


if __name__ == "__main__":
    raise SystemExit(main())
