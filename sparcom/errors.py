"""One exception type for every user-facing problem.

The CLI turns a :class:`SparcomError` into one line on stderr and a non-zero exit, never a traceback, so
every message must say what is wrong, where, and what to do.
"""

from __future__ import annotations


class SparcomError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
