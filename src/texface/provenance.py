"""What produced a run: the code's git commit (and whether it had uncommitted changes), the command line, the
resolved config, versions and timing, written as ``provenance.json`` into the run folder."""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from texface.atomic import write_text

PROVENANCE_FILE = "provenance.json"
SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the folder holding the packages (src/ in a checkout)


def git_state(path: Path = SOURCE_ROOT) -> dict:
    """{'commit': sha or None, 'dirty': bool or None} of the checkout holding ``path`` (None outside one, e.g. an
    installed wheel)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def command_line() -> str:
    """The command as typed: ``python -m package.module args...`` for module runs."""
    argv = list(sys.argv)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        argv = ["python", "-m", spec.name.removesuffix(".__main__"), *argv[1:]]
    return shlex.join(argv)


def resolved_config(cfg: DictConfig) -> dict:
    """The config with every interpolation resolved (unresolvable ones kept as written)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that fails to resolve is reported by the task itself
        return OmegaConf.to_container(cfg, resolve=False)


class Provenance:
    """The record of one run; :meth:`write` (re)writes ``run_dir/provenance.json`` atomically."""

    def __init__(self, run_dir: str | os.PathLike):
        import torch  # only for its version; imported here so that the module stays light

        self.path = Path(run_dir) / PROVENANCE_FILE
        self.started = time.time()
        self.record = {
            "command": command_line(),
            "cwd": os.getcwd(),
            "git": git_state(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "host": platform.node(),
            "status": "running",
            "config": None,  # written once the command has resolved it (texface.cli.run_task)
        }

    def write(self, **updates) -> Path:
        self.record.update(updates)
        return write_text(self.path, json.dumps(self.record, indent=2, default=str) + "\n")

    def finish(self, status: str, exit_code: int) -> Path:
        return self.write(status=status, exit_code=exit_code, elapsed_s=round(time.time() - self.started, 3))
