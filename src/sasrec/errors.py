"""User-facing errors: the CLI prints their message (no traceback) and exits with status 2."""

from __future__ import annotations


class SASRecError(Exception):
    """An error caused by user input (bad file, bad option) rather than by a bug."""


class DataError(SASRecError):
    """A problem in an input data file. The message names the file, the line and the problem.

    ``path`` and ``line`` (1-based, or None when the problem is the whole file) are kept for callers that
    point at the place, e.g. an editor.
    """

    def __init__(self, path: object, problem: str, line: int | None = None):
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line


class ConfigError(SASRecError):
    """An invalid hyperparameter or option."""
