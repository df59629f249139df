"""Write a dataset of the synthetic attribute world: ``python -m scd.synthesize OUT_DIR --n 5000 --seed 0``.

The dataset is in the style-code format of data/README.md (:mod:`texface.stylecodes`), drawn from
:class:`scd.synthetic.AttributeWorld`.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from scd.synthetic import AttributeWorld
from texface.cli import run_main
from texface.options import check_int


def synthesize(out_dir: str, n: int, *, seed: int = 0, world_seed: int = 0) -> str:
    """Draw ``n`` codes of world ``world_seed`` with sample seed ``seed`` and save them to ``out_dir``."""
    data = AttributeWorld(world_seed).sample(check_int("--n", n, 1), seed=seed)
    data.save(out_dir)
    return f"wrote {n} codes with {sum(len(c) for c in data.captions)} captions to {out_dir}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scd.synthesize",
                                     description="Write a synthetic style-code dataset (data/README.md format).")
    parser.add_argument("out_dir", help="dataset directory to write (replaced if it is a dataset)")
    parser.add_argument("--n", type=int, default=5000, help="number of codes (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    parser.add_argument("--world-seed", type=int, default=0, help="seed of the world's directions (default 0)")
    args = parser.parse_args(argv)
    return run_main(lambda: print(synthesize(args.out_dir, args.n, seed=args.seed, world_seed=args.world_seed)))


if __name__ == "__main__":
    raise SystemExit(main())
