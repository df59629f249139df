"""One error hierarchy for the whole project.

Every error texface raises on purpose derives from :class:`TexfaceError`. The command runner
(:mod:`texface.cli`) prints such an error as one ``error: ...`` line and exits with its ``exit_code``; anything
else is a bug and keeps its traceback.

Exit codes (the same for every command):

- 0: success;
- 2: the request cannot be carried out as given: a bad option, a missing or malformed file, an unsafe pickle
  (:class:`ConfigError`, :class:`CheckpointError`, :class:`DataFormatError` and their subclasses); nothing was
  written;
- 1: the run itself failed after it started (:class:`RunError`), e.g. training diverged; what was written before
  stays valid;
- 130: interrupted (Ctrl-C).
"""
from __future__ import annotations


class TexfaceError(Exception):
    """Base class of the errors texface raises on purpose; the CLI shows them as one line."""

    exit_code = 2


class ConfigError(TexfaceError, ValueError):
    """A bad option, request or argument (a value out of range, an unknown choice, a missing setting)."""


class CheckpointError(TexfaceError):
    """A checkpoint (ours or an official file) is missing, incomplete, malformed, or does not fit its model."""


class ConvertError(CheckpointError):
    """An official file cannot be converted exactly into our format."""


class UnsafePickleError(ConvertError):
    """A pickle references something outside the reader's allow-list; nothing from it was executed."""


class DataFormatError(TexfaceError, ValueError):
    """A dataset (on disk or in memory) breaks its documented format."""


class RunError(TexfaceError):
    """A run failed after it started (not because of its input)."""

    exit_code = 1


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (library errors can span many lines; ours are one line)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def one_line(err: BaseException | str) -> str:
    """A message with its whitespace (newlines included) collapsed to single spaces."""
    return " ".join(str(err).split())
