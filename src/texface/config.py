"""Hydra configs: where they live, composing them in code, and instantiating ``_target_`` nodes.

The configs are the repository's top-level ``conf/`` in a checkout; an installed wheel carries a copy as
``texface/conf`` (pyproject's build step copies it). :func:`compose` gives notebooks and tests the config a
command would see; :func:`instantiate` builds a ``_target_`` node and lets our own errors through unwrapped
(Hydra wraps every exception of a constructor in an InstantiationException).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from texface.errors import ConfigError, TexfaceError

PACKAGE_CONF = Path(__file__).resolve().parent / "conf"        # inside an installed wheel
CHECKOUT_CONF = Path(__file__).resolve().parents[2] / "conf"   # src/texface/config.py -> <checkout>/conf


def config_dir() -> Path:
    """The Hydra config root: the checkout's ``conf/`` when running from a checkout, else the wheel's copy."""
    for path in (CHECKOUT_CONF, PACKAGE_CONF):
        if (path / "train.yaml").is_file():
            return path
    raise ConfigError(f"texface's configs are missing (looked in {CHECKOUT_CONF} and {PACKAGE_CONF}); "
                      "reinstall the package")


def compose(config_name: str, overrides: Sequence[str] = (), *, return_hydra_config: bool = False):
    """The config ``python -m <command> overrides...`` composes, outside a command (Hydra's compose API).

    Interpolations of the Hydra run folder (``${hydra:runtime.output_dir}``) only resolve with
    ``return_hydra_config=True`` or inside a command: pass ``paths.output_dir=...`` instead.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def instantiate(node, **kwargs):
    """``hydra.utils.instantiate(node, **kwargs)``, re-raising a TexfaceError from inside it as itself."""
    import hydra
    from hydra.errors import InstantiationException

    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, TexfaceError):
            raise cause from None
        raise
