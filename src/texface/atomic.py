"""Atomic writes: every file and directory the project writes appears complete under its final name or not at all.

- :func:`atomic_directory` (checkpoints, datasets): build the directory in a hidden sibling, then rename it into
  place; an existing directory at the path is replaced only once the new one is complete.
- :func:`atomic_file` (images, videos, JSON): write a hidden sibling file, then rename it onto the path.
- :func:`staging` (a command's set of outputs): write every output into a hidden folder inside the output folder
  and move them all in once the command has succeeded, so a failed command leaves no partial set behind.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder; when the block succeeds it replaces ``path`` in one rename.

    A crash or exception inside the block removes the temporary folder and leaves an existing ``path`` untouched,
    so readers never see a half-written directory. The result gets the usual umask-based permissions (mkdtemp and
    safetensors create owner-only modes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        umask = _umask()
        tmp.chmod(0o777 & ~umask)
        for file in tmp.iterdir():
            if file.is_file():
                file.chmod(0o666 & ~umask)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary path next to ``path`` (same suffix, so writers that look at it pick the right
    format); rename it onto ``path`` when the block succeeds, delete it when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextmanager
def staging(out_dir: str | os.PathLike) -> Iterator[Path]:
    """A hidden folder inside ``out_dir`` to write into; its files move into ``out_dir`` if the block succeeds.

    The folder is removed either way, so a failed command leaves ``out_dir`` as it was (created if missing).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        yield stage
        for file in sorted(stage.iterdir()):
            os.replace(file, out_dir / file.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
