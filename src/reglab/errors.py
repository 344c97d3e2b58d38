"""Errors a user can cause. The CLI turns them into one message and exit status 2."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class UserError(Exception):
    """A mistake in what the user asked for: bad value, unknown name, missing data."""

    exit_code = 2


class ConfigError(UserError):
    """A config field holds a value that is not allowed.

    The message always names the field (dotted path) and says what is allowed.
    """

    def __init__(self, field: str, message: str, allowed: Iterable[object] | None = None):
        self.field = field
        self.allowed = list(allowed) if allowed is not None else None
        text = f"{field}: {message}"
        if self.allowed is not None:
            text += f" (allowed: {', '.join(map(str, self.allowed))})"
        super().__init__(text)


class DataMissingError(UserError):
    """Dataset files are absent and could not be downloaded."""


class Interrupted(UserError):
    """Ctrl-C (SIGINT) stopped a run or a sweep; the message says what to rerun."""

    exit_code = 130


def pydantic_message(err: Mapping[str, Any]) -> str:
    """One pydantic error (an item of ValidationError.errors()) in reglab's words: no "Value
    error," prefix, "must be" for "Input should be", and the value that was given."""
    msg = str(err.get("msg", "")).removeprefix("Value error, ").replace("Input should be", "must be")
    if err.get("type") == "value_error":
        return msg
    return f"{msg} (got {err.get('input')!r})"
