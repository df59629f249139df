"""Convert an official EG3D network pickle into a texface generator checkpoint, without running pickled code.

    python -m eg3d.convert ffhqrebalanced512-128.pkl checkpoints/ffhq512

The pickle is read by :mod:`eg3d.official_pickle` (an allow-list unpickler: tensors, network state and plain
containers only); its ``G_ema`` is checked strictly against our TriPlaneGenerator and written with
:func:`eg3d.checkpoint.save_generator`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from eg3d.checkpoint import instantiate_generator, save_generator
from eg3d.official_pickle import generator_from_pickle
from texface.cli import run_main


def convert(src: str | Path, dst: str | Path) -> Path:
    """Convert the ``G_ema`` of an official EG3D pickle ``src`` into our checkpoint directory ``dst``."""
    init_kwargs, nrr, state = generator_from_pickle(src)
    generator = instantiate_generator(init_kwargs, nrr, state, source=src)  # checks the state dict strictly
    return save_generator(generator, dst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eg3d.convert",
        description="Convert the G_ema of an official EG3D network pickle into a texface checkpoint directory; "
                    "no code from the pickle is run.")
    parser.add_argument("src", help="official EG3D network pickle (.pkl)")
    parser.add_argument("dst", help="output checkpoint directory (created or replaced atomically)")
    args = parser.parse_args(argv)
    return run_main(lambda: print(f"wrote {convert(args.src, args.dst)}"))


if __name__ == "__main__":
    raise SystemExit(main())
