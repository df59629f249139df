"""Command line: write a face-world dataset (the logic is :func:`faceworld.datadir.write_dataset`).

    python -m faceworld.dataset OUT_DIR --heads N --views V --resolution 128 --seed S [--device auto] [--force]

Bad arguments print one ``error: ...`` line and exit with status 2; nothing is written then.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from faceworld.datadir import write_dataset
from faceworld.world import FaceWorld
from texface.cli import run_main
from texface.errors import one_line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"error: {one_line(message)}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="python -m faceworld.dataset",
                     description="Render a face-world dataset (EG3D layout, data/README.md 'The face world').")
    parser.add_argument("out_dir", type=Path, help="dataset directory to write")
    parser.add_argument("--heads", type=int, default=1000, help="number of heads (default 1000)")
    parser.add_argument("--views", type=int, default=4, help="cameras per head (default 4)")
    parser.add_argument("--resolution", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="sample seed of heads and cameras (default 0)")
    parser.add_argument("--world-seed", type=int, default=0, help="world seed (default 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--force", action="store_true", help="replace an existing face-world dataset")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    def write() -> None:
        summary = write_dataset(args.out_dir, heads=args.heads, views=args.views, resolution=args.resolution,
                                seed=args.seed, world=FaceWorld(args.world_seed), device=args.device,
                                force=args.force, progress=not args.no_progress)
        print(f"wrote {summary['images']} images of {summary['heads']} heads ({summary['resolution']}^2) to "
              f"{summary['path']} in {summary['seconds']} s on {summary['device']}")

    return run_main(write)


if __name__ == "__main__":
    raise SystemExit(main())
