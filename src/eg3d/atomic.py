"""Atomic directory writes, shared by checkpoints and datasets."""
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
