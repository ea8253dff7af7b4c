"""Errors that carry enough context for a user to fix their input.

Every error a user can cause by bad input derives from :class:`OtxNldError`; the CLI turns
those into a one-line message on stderr and exit code 2. Anything else is a bug.
"""

from __future__ import annotations

from pathlib import Path


class OtxNldError(Exception):
    """Base class for errors caused by bad user input (bad file, bad value, bad option)."""


class DatasetError(OtxNldError):
    """A dataset file is missing, unreadable or malformed.

    The message names the file and, where there is one, the 1-based line number.
    """

    def __init__(self, path: str | Path | None, message: str, line: int | None = None):
        self.path = Path(path) if path is not None else None
        self.line = line
        self.reason = message
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(f"{where}{message}")


class ConfigError(OtxNldError):
    """A recipe or option value is invalid; the message names the key."""
