"""The one command runner behind every ``python -m`` entry point.

Each command is a thin ``main`` over an importable task function. The runner gives all of them the same
behaviour:

- ``device: auto`` in a config is resolved once (:func:`texface.device.resolve_device`) before the task runs;
- errors that mean "bad input" (every :class:`~texface.errors.TexfaceError`, OmegaConf's missing or invalid
  values, an OSError about a named path, and the ValueError a library constructor raises for a config value that
  Hydra instantiates) are printed as
  one ``error: ...`` line, with the error's exit code (:mod:`texface.errors`: 2 for bad input, 1 for a failed
  run, 130 when interrupted); Hydra's InstantiationException wrapper is removed first; any other exception is
  a bug and keeps its traceback;
- the run's provenance (git commit and dirty flag, command line, resolved config, timing, exit status) is written
  to ``provenance.json`` in the Hydra run folder at the start and updated at the end;
- the elapsed time is printed when the command succeeds.

The configs come from :func:`texface.config.config_dir`.
"""
from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any

from texface.config import config_dir
from texface.errors import ConfigError, TexfaceError, first_line, one_line


def user_error(err: BaseException) -> TexfaceError | None:
    """The bad-input error behind ``err`` as a TexfaceError, or None when ``err`` is a bug."""
    from hydra.errors import InstantiationException
    from omegaconf.errors import OmegaConfBaseException

    instantiated = False
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err, instantiated = err.__cause__, True
    if isinstance(err, TexfaceError):
        return err
    if isinstance(err, OSError) and err.filename is not None:  # a path that cannot be read or written
        return ConfigError(f"{err.strerror or first_line(err)}: {err.filename}")
    if isinstance(err, OmegaConfBaseException):
        return ConfigError(first_line(err))
    if instantiated and isinstance(err, (ValueError, TypeError, FileNotFoundError)):
        return ConfigError(first_line(err))
    return None


def _fail(err: TexfaceError) -> int:
    print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
    return err.exit_code


def run_main(task: Callable[[], Any]) -> int:
    """Run an argparse command's ``task()``; return its exit code (0, or the error's) after reporting."""
    start = time.perf_counter()
    try:
        task()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        reason = user_error(err)
        if reason is None:
            raise
        return _fail(reason)
    print(f"done in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


def run_task(task: Callable[[Any], Any], cfg) -> Any:
    """Run a Hydra command's ``task(cfg)`` with the runner's device resolution, errors and provenance; exit the
    process with the error's code when it fails, return the task's result (a sweep's objective) when it succeeds."""
    from hydra.core.hydra_config import HydraConfig

    from texface.device import resolve_device
    from texface.provenance import Provenance, resolved_config

    start = time.perf_counter()
    record = Provenance(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
    code, status = 0, "ok"
    try:
        if "device" in cfg:
            cfg.device = str(resolve_device(cfg.device))
        if record is not None:
            record.write(config=resolved_config(cfg))
        return task(cfg)
    except KeyboardInterrupt:
        code, status = 130, "interrupted"
        print("error: interrupted", file=sys.stderr)
        sys.exit(code)
    except Exception as err:
        reason = user_error(err)
        code, status = (1, "crashed") if reason is None else (reason.exit_code, f"error: {one_line(reason)}")
        if reason is None:
            raise
        sys.exit(_fail(reason))
    finally:
        if record is not None:
            record.finish(status, code)
        if code == 0:
            print(f"done in {time.perf_counter() - start:.1f} s", flush=True)


def hydra_command(config_name: str, task: Callable[[Any], Any]) -> Callable[[], Any]:
    """The ``main()`` of a Hydra command: compose ``conf/<config_name>.yaml`` with the command line and run
    ``task(cfg)`` through :func:`run_task`."""
    import hydra

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)
    @functools.wraps(task)
    def main(cfg):
        return run_task(task, cfg)

    return main
